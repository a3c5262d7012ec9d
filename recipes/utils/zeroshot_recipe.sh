#!/usr/bin/env bash
# Stages shared by the fold-protocol zero-shot recipes (esc50_zeroshot,
# urbansound8k_zeroshot). Their run.sh sets the dataset, sources conf/paths.sh
# and common.sh, then sources this file. Expects:
#   dataset (audiocl prepare's name), data_root, n_folds, model, extract,
#   prompt, nj, force, python; conf/classes.txt (the dataset's full class list).
#
# Stages: 0 manifest (audiocl prepare), 1 feature store with the model's
# front-end (only with --extract true), 2 audiocl eval zeroshot, 3 results table.

[ -n "${model}" ] || die "--model DIR is required (a model folder: config.json, model.safetensors, frontend.json)"
# a relative --model is relative to where run.sh was started (run.sh itself works in the recipe folder)
case "${model}" in
  /*) ;;
  *) if [ -d "${caller_dir:-.}/${model}" ]; then model=${caller_dir}/${model}; fi ;;
esac
[ -f "${model}/config.json" ] || die "${model} is not a model folder (no config.json)"
model=$(cd "${model}" && pwd)
# outputs per model folder: its parent and own names (readable) plus a hash of its
# absolute path, so two folders both called "model" never share results or .done markers
tag="$(basename "$(dirname "${model}")")_$(basename "${model}")-$(printf '%s' "${model}" | sha1sum | cut -c1-8)"
data=data
exp=exp/${tag}
done_dir=${exp}/.done
mkdir -p "${data}" "${exp}"
use_audiocl

zs_stage0() {
  [ -d "${data_root}" ] || die "${dataset} not found at '${data_root}': set its path in conf/paths.sh"
  audiocl prepare "${dataset}" --root "${data_root}" --out "${data}/manifest.jsonl" --quiet
}

zs_stage1() {
  rm -rf "${exp}/store"
  # shellcheck disable=SC2046
  audiocl extract --manifest "${data}/manifest.jsonl" --out "${exp}/store" \
    $(${python} ../utils/frontend_args.py "${model}") --workers "${nj}" --no-progress
}

zs_stage2() {
  local store_args=() prompt_args=()
  if [ "${extract}" = true ]; then store_args=(--store "${exp}/store"); fi
  if [ -n "${prompt}" ]; then prompt_args=(--prompt "${prompt}"); fi
  audiocl eval zeroshot --model "${model}" --manifest "${data}/manifest.jsonl" "${store_args[@]}" \
    --classes conf/classes.txt "${prompt_args[@]}" --out "${exp}/eval/zeroshot.json"
}

zs_stage3() {
  ${python} ../utils/zeroshot_results.py --eval "${exp}/eval/zeroshot.json" --dataset "${dataset}" \
    --folds "${n_folds}" --command "${cmdline}" --out "${exp}"
}

cmdline="./run.sh $*"
t_start=$(now_s)
# the manifest depends on the data only; everything after it on the model too
done_dir="${data}/.done" run_stage 0 "${dataset} manifest from ${data_root}" zs_stage0
if [ "${extract}" = true ]; then
  run_stage 1 "feature store with the model's front-end" zs_stage1
fi
run_stage 2 "zero-shot evaluation, ${n_folds}-fold protocol" zs_stage2
run_stage 3 "results table" zs_stage3
log "all selected stages finished in $(( $(now_s) - t_start )) s"
log "model:   ${model}"
log "results: $(pwd)/${exp}/results.json and $(pwd)/${exp}/results.md"
