#!/bin/bash -x
# Excerpt, for the tests, of Fugaku-LLM's launch script as published:
#   Fugaku-LLM/DeepSpeedFugaku, scripts/13b/13b_pp8_tp6_dp288_inner.sh
#   @ 7d97ff1bf8acba3321918102c6654094bd4ce516
# The variables and the training command are as published; the environment set-up,
# the dataset list (34 paths) and the checkpoint paths are shortened.

CPUS_PER_NODE=1 # fixed (Fugaku)
NNODES=13824
export WORLD_SIZE=$(($CPUS_PER_NODE * $NNODES))

TOKENIZER_PATH=llm-jp-tokenizer/models/ver2.2/code10K_en20K_ja30K.ver2.2.model

DATA_PARALLEL_SIZE=288
PIPELINE_MODEL_PARALLEL_SIZE=8
TENSOR_MODEL_PARALLEL_SIZE=6

MICRO_BATCH_SIZE=1
GLOBAL_BATCH_SIZE=2016 #2304

CHECKPOINT_PATH=checkpoints/13b/dp${DATA_PARALLEL_SIZE}_pp${PIPELINE_MODEL_PARALLEL_SIZE}_tp${TENSOR_MODEL_PARALLEL_SIZE}/
DATASET_PATH=dataset/v2_2-code10k_en20k_ja30k
TRAIN_DATA_PATH=""
TRAIN_DATA_PATH="${TRAIN_DATA_PATH} 21533774460 ${DATASET_PATH}/books_merged_text_document"

train_token_in_billion=400
train_token=$(echo "$train_token_in_billion * 1000 * 1000 * 1000" | bc)
train_token=$(echo "$train_token/1" | bc)
lr_warmup_tokens_in_billion=4
lr_warmup_tokens=$(echo "$lr_warmup_tokens_in_billion * 1000 * 1000 * 1000" | bc)
lr_warmup_tokens=$(echo "$lr_warmup_tokens/1" | bc)
lr_decay_tokens_in_billion=${train_token_in_billion}
lr_decay_tokens=${train_token}

TENSORBOARD_ARGS="--tensorboard-dir experiments/tensorboard"

PIPELINE_PARALLEL_ARGS="--pipeline-model-parallel-size $PIPELINE_MODEL_PARALLEL_SIZE"
MODEL_PARALLEL_ARGS="--tensor-model-parallel-size $TENSOR_MODEL_PARALLEL_SIZE"
DATA_PARALLEL_ARGS="--DDP-impl local"
PARALLEL_ARGS="$MODEL_PARALLEL_ARGS $DATA_PARALLEL_ARGS $PIPELINE_PARALLEL_ARGS"

export OMP_NUM_THREADS=48
export LD_PRELOAD=$1
export MYGEMM=99

SEQUENCE_LENGTH=2048
train_samples=$((300 * 1000000000 * 2 / ${SEQUENCE_LENGTH}))

numactl -m 4-7 -N 4-7 \
  python pretrain_gpt.py \
  --num-layers 40 \
  --hidden-size 5184 \
  --num-attention-heads 36 \
  --micro-batch-size $MICRO_BATCH_SIZE \
  --global-batch-size $GLOBAL_BATCH_SIZE \
  --seq-length $SEQUENCE_LENGTH \
  --max-position-embeddings $SEQUENCE_LENGTH \
  --train-tokens $train_token \
  --train-samples $train_samples \
  --lr-decay-tokens $lr_decay_tokens \
  --lr-warmup-tokens $lr_warmup_tokens \
  --save $CHECKPOINT_PATH/gbs${GLOBAL_BATCH_SIZE}_v3 \
  --load $CHECKPOINT_PATH/gbs${GLOBAL_BATCH_SIZE}_v2 \
  --data-path $TRAIN_DATA_PATH \
  --tokenizer-type JapaneseSentencePiece \
  --vocab-file $TOKENIZER_PATH \
  --data-impl mmap \
  --split 949,51,0 \
  --distributed-backend mpi \
  --init-method-std 0.008 \
  --lr 2.0e-5 \
  --override-lr-scheduler \
  --min-lr 1.0e-6 \
  --lr-decay-style cosine \
  --weight-decay 0.1 \
  --cpu-optimizer \
  --cpu-torch-adam \
  --adam-beta1 0.9 \
  --adam-beta2 0.95 \
  --clip-grad 1.0 \
  --lr-warmup-fraction .01 \
  --log-interval 1 \
  --save-interval 250 \
  --eval-interval 100 \
  --eval-iters 10 \
  --no-cuda \
  --checkpoint-activations \
  --use-cpu-initialization \
  --num-workers 1 \
  $PARALLEL_ARGS \
  $TENSORBOARD_ARGS \
  --log-batch-size-to-tensorboard \
  --log-validation-ppl-to-tensorboard \
  --log-timers-to-tensorboard \
  --log-optimizer-states-to-tensorboard \
  --use-flush-denormal \
  --wandb-entity "gpt-fugaku" \
  --wandb-project "13B-2023-12-12" \
  --wandb-name "13b_dp${DATA_PARALLEL_SIZE}_pp${PIPELINE_MODEL_PARALLEL_SIZE}_tp${TENSOR_MODEL_PARALLEL_SIZE}_gbs${GLOBAL_BATCH_SIZE}"
