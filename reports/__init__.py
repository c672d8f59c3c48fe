"""Capacity reports: text tables for the terminal now; HTML and Markdown with plots.

Reports render predictions; they never compute them (they call perfmodel).
"""
