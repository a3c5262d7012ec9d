#!/usr/bin/env bash
# clap_audiocaps_clotho: train a CLAP on your copies of AudioCaps and Clotho v2.1,
# then text-to-audio / audio-to-text retrieval on the AudioCaps test set and the
# Clotho evaluation set with the 5-caption protocol.
#
#   edit conf/paths.sh (audiocaps_root, clotho_root, ...), then
#   ./run.sh                                   # all stages; finished ones are skipped
#   ./run.sh --train-args "train.epochs=5 data.batch_size=64"
#   ./run.sh --stage 3 --stop-stage 4 --force true
#
# Stages: 0 manifests (audiocl prepare audiocaps / clotho), 1 feature
# extraction, 2 training, 3 retrieval evaluation, 4 results table
# (exp/clap_audiocaps_clotho/results.json, results.md).
set -euo pipefail

stage=0
stop_stage=4
nj=2                       # extraction workers
train_config=conf/train.yaml
train_args=""              # extra key=value overrides for audiocl train, e.g. "train.epochs=2"
force=false
python=python

cd "$(dirname "$0")"
. conf/paths.sh            # the one place where the data paths are set
_recipe_options="stage stop_stage nj train_config train_args force python audiocaps_root audiocaps_audio_dir audiocaps_filename_pattern clotho_root"
. ../utils/common.sh

data=data
exp=exp/clap_audiocaps_clotho
done_dir=${exp}/.done
mkdir -p "${data}" "${exp}"
use_audiocl

# 16 kHz, 512-point FFT, 10 ms hop, 64 Slaney mels up to 8 kHz (clap_sfx's front-end);
# the trained model's frontend.json records it, so its evaluations decode the same way.
frontend_args="--preset laion_clap --set sample_rate=16000 --set n_fft=512 --set win_length=512
  --set hop_length=160 --set f_max=8000 --set clip_samples=160000"

stage0() {
  local m=${data}/manifests
  mkdir -p "${m}"
  [ -d "${audiocaps_root}" ] || die "AudioCaps not found at '${audiocaps_root}': set audiocaps_root in conf/paths.sh"
  [ -d "${clotho_root}" ] || die "Clotho not found at '${clotho_root}': set clotho_root in conf/paths.sh"
  local ac_args=(--root "${audiocaps_root}" --out "${m}/audiocaps.jsonl" --quiet)
  [ -z "${audiocaps_audio_dir}" ] || ac_args+=(--audio-dir "${audiocaps_audio_dir}")
  [ -z "${audiocaps_filename_pattern}" ] || ac_args+=(--filename-pattern "${audiocaps_filename_pattern}")
  # YouTube clips disappear: AudioCaps rows without audio are skipped and counted (the importer reports them)
  audiocl prepare audiocaps "${ac_args[@]}"
  audiocl prepare clotho --root "${clotho_root}" --out "${m}/clotho.jsonl" --quiet
  ${python} local/make_splits.py --audiocaps "${m}/audiocaps.jsonl" --clotho "${m}/clotho.jsonl" --out "${m}" \
    | tee "${exp}/split_counts.json"
}

stage1() {
  rm -rf "${data}/store"
  # shellcheck disable=SC2086
  audiocl extract --manifest "${data}/manifests/all.jsonl" --out "${data}/store" ${frontend_args} \
    --workers "${nj}" --no-progress --json | tee "${exp}/extract_summary.json"
}

stage2() {
  rm -rf "${exp}/train"
  # shellcheck disable=SC2086
  audiocl train --config "${train_config}" --output "${exp}/train" ${train_args} | tee "${exp}/train_summary.json"
}

stage3() {
  local model=${exp}/train/model m=${data}/manifests
  log "AudioCaps test: every caption a text-to-audio query; each clip against all captions"
  audiocl eval retrieval --model "${model}" --manifest "${m}/audiocaps_test.jsonl" --store "${data}/store" \
    --out "${exp}/eval/audiocaps_test.json"
  log "Clotho evaluation split, same protocol"
  audiocl eval retrieval --model "${model}" --manifest "${m}/clotho_evaluation.jsonl" --store "${data}/store" \
    --out "${exp}/eval/clotho_evaluation.json"
}

stage4() {
  ${python} local/write_results.py --eval "audiocaps_test=${exp}/eval/audiocaps_test.json" \
    --eval "clotho_evaluation=${exp}/eval/clotho_evaluation.json" --command "${cmdline}" --out "${exp}"
}

cmdline="./run.sh $*"
t_start=$(now_s)
run_stage 0 "AudioCaps and Clotho manifests" stage0
run_stage 1 "feature extraction (16 kHz, 64 mels)" stage1
run_stage 2 "training (CNN10-tiny audio, frozen MiniLM text)" stage2
run_stage 3 "retrieval on AudioCaps test and Clotho evaluation (5 captions a clip)" stage3
run_stage 4 "results table" stage4
log "all selected stages finished in $(( $(now_s) - t_start )) s"
log "model:   $(pwd)/${exp}/train/model"
log "results: $(pwd)/${exp}/results.json and $(pwd)/${exp}/results.md"
