#!/usr/bin/env bash
# esc50_zeroshot: zero-shot ESC-50 with any audiocl model folder, the 5-fold protocol
# (each fold's top-1/top-5 and their mean), on your own copy of ESC-50.
#
#   edit conf/paths.sh (esc50_root), then
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
dataset=esc50
n_folds=5

caller_dir=$(pwd)
cd "$(dirname "$0")"
. conf/paths.sh        # esc50_root: the one place where the data path is set
data_root=${esc50_root}
_recipe_options="stage stop_stage model extract prompt nj force python data_root"
. ../utils/common.sh
. ../utils/zeroshot_recipe.sh
