#!/usr/bin/env bash
# symile_xor: the Symile paper's binary XOR experiments with Symile, pairwise
# CLIP and GRAM (identical linear encoders and budget), zero-shot prediction of
# one variable from the others, then RESULTS.md with a table and a plot.
#
#   ./run.sh                                  # all stages (finished ones are skipped)
#   ./run.sh --stage 2 --stop-stage 3         # only the p sweep and RESULTS.md
#   ./run.sh --seeds "0 1 2 3 4" --force true # more seeds, redo the selected stages
#
# Stages: 0 data (local/make_data.py), 1 the 8-bit example (h = XOR of a..g),
# 2 the 3-variable sweep over p (c = a XOR b with probability p, else c = a),
# 3 RESULTS.md + results/*.png. Everything else lands in data/ and exp/.
set -euo pipefail

stage=0
stop_stage=3
nj=2                         # trainings at once, one CPU thread each
seeds="0 1 2"                # data and training seed of each run
ps="0 0.5 1"                 # the sweep's probabilities that c = a XOR b (paper: 0, 0.1, ..., 1)
d_v=1                        # bits per variable in the sweep (candidates: 2^d_v values)
epochs=50                    # the authors' budget (examples/binary_xor.py)
losses="symile pairwise gram"
train_args=""                # extra key=value overrides for audiocl train, e.g. "optim.lr=0.05"
force=false
python=python
_recipe_options="stage stop_stage nj seeds ps d_v epochs losses train_args force python"

cd "$(dirname "$0")"
. ../utils/common.sh

data=data
exp=exp
done_dir=${exp}/.done
stage_timings=${exp}/timings.tsv
mkdir -p "${data}" "${exp}"
use_audiocl
[[ "${nj}" =~ ^[1-9][0-9]*$ ]] || die "--nj must be a positive integer, got '${nj}'"
[[ "${epochs}" =~ ^[1-9][0-9]*$ ]] || die "--epochs must be a positive integer, got '${epochs}'"

# xor3 data and experiment folders are per d_v and p, so other sweeps never overwrite these
stage0() {
  local s p
  for s in ${seeds}; do
    ${python} local/make_data.py --task xor8 --seed "${s}" --out "${data}/xor8/seed${s}"
    for p in ${ps}; do
      ${python} local/make_data.py --task xor3 --p "${p}" --d-v "${d_v}" --seed "${s}" \
        --out "${data}/xor3/d${d_v}_p$(printf '%.2f' "${p}")/seed${s}"
    done
  done
}

# shellcheck disable=SC2086
grid() {
  ${python} local/run_grid.py --nj "${nj}" --seeds ${seeds} --losses ${losses} --epochs "${epochs}" \
    --python "${python}" ${train_args:+--train-args ${train_args}} $([ "${force}" = true ] && echo --force) "$@"
}

stage1() {
  grid --task xor8 --data "${data}/xor8" --exp "${exp}/xor8" | tee "${exp}/xor8_summary.json"
}

stage2() {
  # shellcheck disable=SC2086
  grid --task xor3 --data "${data}/xor3" --exp "${exp}/xor3" --d-v "${d_v}" --ps ${ps} \
    | tee "${exp}/xor3_d${d_v}_summary.json"
}

stage3() {
  ${python} local/write_results.py --exp "${exp}" --d-v "${d_v}" --out RESULTS.md --plots results
}

echo "./run.sh $*  # started $(date -u +%H:%M:%S) UTC" >> "${exp}/command.txt"
t_start=$(now_s)
run_stage 0 "data: xor8 and the xor3 sweep (seeds: ${seeds})" stage0
run_stage 1 "8-bit XOR: ${losses} x seeds ${seeds}, ${epochs} epochs" stage1
run_stage 2 "3-variable sweep over p (${ps}), d_v=${d_v}" stage2
run_stage 3 "RESULTS.md" stage3
total=$(( $(now_s) - t_start ))
printf 'all\t%s\t%s\t%s\n' "selected stages ${stage}-${stop_stage}" "${total}" "$(cut -d' ' -f1 /proc/loadavg)" >> "${stage_timings}"
log "all selected stages finished in ${total} s; results: $(pwd)/RESULTS.md"
