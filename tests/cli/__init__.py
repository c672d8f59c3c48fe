"""CLI tests (a package, so test_plan.py here and in tests/perfmodel/ do not collide)."""
