#!/usr/bin/env bash
# trimodal_audio: a three-modality task built from synthesised audio in which no
# pair of modalities tells anything about the third (Symile-M3's idea): speech
# in one of 5 languages (espeak-ng), one note of one of 5 instruments
# (fluidsynth, General MIDI) and a text naming one instrument per language;
# the word in the speech's language names the note's instrument. Symile, GRAM
# and pairwise CLIP train the same MLP towers on fixed clip features; zero-shot
# multi-way retrieval on held-out clips; a control task where pairs suffice;
# runs with missing modalities (Symile's missingness indicators).
#
#   ./run.sh                          # all stages (finished ones are skipped)
#   ./run.sh --stage 4 --stop-stage 6 # only training, evaluation and RESULTS.md
#   ./run.sh --force true             # redo the selected stages even if done before
#   ./run.sh --seeds "0 1 2"          # more training seeds
#
# Stages: 0 Debian packages + corpus (espeak-ng, fluidsynth), 1 feature
# extraction, 2 pooled clip features + linear-probe check, 3 tuple arrays +
# structure check, 4 training, 5 evaluation, 6 RESULTS.md. Output: data/, exp/.
set -euo pipefail

stage=0
stop_stage=6
nj=2                       # extraction workers, espeak-ng processes, parallel training runs
seeds="0 1 2"              # training seeds of the main runs (tuples and clips are fixed)
losses="symile gram pairwise"
missing_prob=0.4           # per-modality drop probability of the missingness runs
min_probe=0.85             # stage 2 stops if a pooled feature identifies its class less often
train_args=""              # extra key=value overrides for every audiocl train, e.g. "train.epochs=2"
clips_per_class=""         # override conf/task.yaml (quick runs)
tuples=""                  # override conf/task.yaml, e.g. "train=2000 val=200 test=400"
force=false
python=python
_recipe_options="stage stop_stage nj seeds losses missing_prob min_probe train_args clips_per_class tuples force python"

cd "$(dirname "$0")"
. ../utils/common.sh

data=data
exp=exp
done_dir=${exp}/.done
stage_timings=${exp}/timings.tsv
mkdir -p "${data}" "${exp}"
use_audiocl

# Speech: the speech16k preset (80 mels, 10 ms hop). Notes: the laion_clap log-mel
# recipe at 16 kHz as in recipes/clap_sfx (64 Slaney mels up to 8 kHz).
note_frontend="--preset laion_clap --set sample_rate=16000 --set n_fft=512 --set win_length=512
  --set hop_length=160 --set f_max=8000 --set clip_samples=80000"

stage0() {
  apt_install espeak-ng fluidsynth fluid-soundfont-gm
  need_cmd espeak-ng
  rm -rf "${data}/corpus"
  ${python} local/build_corpus.py --out "${data}/corpus" --jobs "${nj}" \
    ${clips_per_class:+--clips-per-class ${clips_per_class}} | tee "${exp}/corpus_summary.txt"
}

stage1() {
  rm -rf "${data}/store_speech" "${data}/store_notes"
  audiocl extract --manifest "${data}/corpus/speech.jsonl" --out "${data}/store_speech" --preset speech16k \
    --workers "${nj}" --no-progress --json | tail -n 1 > "${exp}/extract_speech.json"
  # shellcheck disable=SC2086
  audiocl extract --manifest "${data}/corpus/notes.jsonl" --out "${data}/store_notes" ${note_frontend} \
    --workers "${nj}" --no-progress --json | tail -n 1 > "${exp}/extract_notes.json"
}

stage2() {
  local f=${data}/features
  mkdir -p "${exp}/probe"
  ${python} local/pool_features.py --manifest "${data}/corpus/speech.jsonl" --store "${data}/store_speech" \
    --name speech --out "${f}/speech.npz"
  ${python} local/pool_features.py --manifest "${data}/corpus/notes.jsonl" --store "${data}/store_notes" \
    --name note --out "${f}/note.npz"
  # can a linear classifier tell the language / instrument from the pooled clip vectors?
  local m acc
  for m in speech note; do
    audiocl eval probe --embeddings "${f}/${m}.npz" --tower "${m}" --k 5 --out "${exp}/probe/${m}.json"
    acc=$(${python} -c "import json,sys; print(json.load(open(sys.argv[1]))['accuracy_mean'])" "${exp}/probe/${m}.json")
    ${python} -c "import sys; sys.exit(float(sys.argv[1]) < float(sys.argv[2]))" "${acc}" "${min_probe}" \
      || die "pooled ${m} features identify their class only ${acc} of the time (< ${min_probe}); improve them first"
  done
}

stage3() {
  rm -rf "${data}/arrays"
  # shellcheck disable=SC2086
  ${python} local/make_arrays.py --features "${data}/features" --out "${data}/arrays" \
    --missing-prob "${missing_prob}" ${tuples:+--tuples ${tuples}} | tee "${exp}/arrays_summary.txt"
}

# one training run: train_one TASK LOSS SEED [miss]
train_one() {
  local task=$1 loss=$2 seed=$3 miss=${4:-} a=${data}/arrays
  local name=${loss}_s${seed}${miss:+_miss}
  local dir=${exp}/${task}/${name}
  local sfx=${miss:+_miss}
  rm -rf "${dir}/train"
  mkdir -p "${dir}"
  local cmd="audiocl train --config conf/${loss}.yaml --output ${dir}/train data.arrays=${a}/${task}_train${sfx}.npz data.val_arrays=${a}/${task}_val${sfx}.npz train.seed=${seed} ${train_args}"
  echo "${cmd}" > "${dir}/train_command.txt"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 ${cmd} > "${dir}/train.log" 2>&1 || { tail -n 20 "${dir}/train.log" >&2; return 1; }
  tail -n 1 "${dir}/train.log" > "${dir}/train_summary.json"
}

stage4() {
  local jobs=() task loss seed
  for task in higher control; do
    for loss in ${losses}; do
      for seed in ${seeds}; do jobs+=("${task} ${loss} ${seed}"); done
      jobs+=("${task} ${loss} ${seeds%% *} miss")
    done
  done
  log "${#jobs[@]} training runs, ${nj} at a time (OMP_NUM_THREADS=1 each)"
  export -f train_one log die
  export exp data train_args
  printf '%s\n' "${jobs[@]}" | xargs -P "${nj}" -I{} bash -c 'train_one {}'
}

stage5() {
  # --loss: each objective's own multi-way score (audiocl.eval.multiway.score_for_loss)
  local a=${data}/arrays task loss seed dir sets
  for task in higher control; do
    for loss in ${losses}; do
      for dir in "${exp}/${task}/${loss}"_s*; do
        [ -d "${dir}/train/model" ] || die "no model in ${dir}/train (run stage 4)"
        sets="test=${a}/${task}_test.npz"
        if [[ ${dir} == *_miss ]]; then
          sets="${sets} no_speech=${a}/${task}_test_no_speech.npz no_note=${a}/${task}_test_no_note.npz no_text=${a}/${task}_test_no_text.npz"
        fi
        # shellcheck disable=SC2086
        ${python} local/evaluate.py --model "${dir}/train/model" --loss "${loss}" --arrays ${sets} \
          --out "${dir}/eval/classlevel.json" > "${dir}/eval_classlevel.log"
        echo "${python} local/evaluate.py --model ${dir}/train/model --loss ${loss} --arrays ${sets} --out ${dir}/eval/classlevel.json" \
          > "${dir}/eval_command.txt"
      done
      # item-level multi-way retrieval with the audiocl CLI, first seed only (see local/evaluate.py)
      seed=${seeds%% *}
      dir=${exp}/${task}/${loss}_s${seed}
      audiocl eval multiway --model "${dir}/train/model" --arrays "${a}/${task}_test.npz" --loss "${loss}" \
        --out "${dir}/eval/multiway_items.json" > /dev/null
    done
  done
}

stage6() {
  ${python} local/write_results.py --data "${data}" --exp "${exp}" --out RESULTS.md
}

t_start=$(now_s)
run_stage 0 "Debian packages, speech (espeak-ng) and note (fluidsynth) clips" stage0
run_stage 1 "feature extraction (speech16k; laion_clap at 16 kHz)" stage1
run_stage 2 "pooled clip features and linear-probe check" stage2
run_stage 3 "tuple arrays (higher-order and control tasks, missingness) and structure check" stage3
run_stage 4 "training Symile, GRAM and pairwise CLIP" stage4
run_stage 5 "zero-shot multi-way retrieval" stage5
run_stage 6 "RESULTS.md" stage6
total=$(( $(now_s) - t_start ))
printf 'total\tall selected stages\t%s\t%s\n' "${total}" "$(cut -d' ' -f1 /proc/loadavg)" >> "${stage_timings}"

log "all selected stages finished in ${total} s"
log "results: $(pwd)/RESULTS.md; models: $(pwd)/${exp}/<task>/<loss>_s<seed>/train/model"
