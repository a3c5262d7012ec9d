#!/usr/bin/env bash
# Train and zero-shot-evaluate one variant of conf/train.yaml (after stages 0-2):
#   local/run_variant.sh NAME key=value ...
# e.g. local/run_variant.sh seed1 train.seed=1
# Outputs: exp/variants/NAME/{model,eval,command.txt}; stage 5 lists every variant.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 NAME [key=value ...]" >&2; exit 2; }
name=$1
shift
out=exp/variants/${name}
m=data/manifests
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x ../../.venv/bin/python ]; then
  PATH="$(cd ../../.venv/bin && pwd):${PATH}"
fi
mkdir -p "${out}"
echo "audiocl train --config conf/train.yaml --output ${out} $*" > "${out}/command.txt"
audiocl train --config conf/train.yaml --output "${out}" "$@" | tail -n 1 > "${out}/train_summary.json"
audiocl eval zeroshot --model "${out}/model" --manifest "${m}/zeroshot.jsonl" --store data/store \
  --classes "${m}/zeroshot_classes.txt" --prompts-file "${m}/prompts.txt" --out "${out}/eval/zeroshot_heldout.json"
audiocl eval zeroshot --model "${out}/model" --manifest "${m}/test.jsonl" --store data/store \
  --prompts-file "${m}/prompts.txt" --out "${out}/eval/zeroshot_test_seen.json"
