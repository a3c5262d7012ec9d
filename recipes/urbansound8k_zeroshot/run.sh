#!/usr/bin/env bash
# urbansound8k_zeroshot: zero-shot UrbanSound8K with any audiocl model folder, the predefined
# 10-fold protocol (each fold's top-1/top-5 and their mean), on your own copy of UrbanSound8K.
#
#   edit conf/paths.sh (urbansound8k_root), then
#   ./run.sh --model /path/to/model_dir                  # all stages; finished ones are skipped
#   ./run.sh --model DIR --extract true                  # embed from a feature store
#   ./run.sh --model DIR --stage 2 --stop-stage 3 --force true
#
# Stages: 0 manifest, 1 feature store (only with --extract true), 2 evaluation,
# 3 results table (exp/<model>/results.json, results.md).
set -euo pipefail

stage=0
stop_stage=3
model=""            # model folder: from `audiocl convert laion`, recipes/clap_sfx, audiocl train ...
extract=false       # true: extract log-mels once (stage 1) instead of decoding in the evaluator
prompt=""           # one template such as "This is a sound of {}." (default: the model's prompts.json)
nj=2
force=false
python=python
dataset=urbansound8k
n_folds=10

caller_dir=$(pwd)
cd "$(dirname "$0")"
. conf/paths.sh        # urbansound8k_root: the one place where the data path is set
data_root=${urbansound8k_root}
_recipe_options="stage stop_stage model extract prompt nj force python data_root"
. ../utils/common.sh
. ../utils/zeroshot_recipe.sh
