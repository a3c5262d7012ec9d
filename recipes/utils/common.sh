#!/usr/bin/env bash
# Shared helpers for recipes/<name>/run.sh (ESPnet/icefall style). Source it:
#
#   stage=0; stop_stage=100; nj=2            # defaults, before sourcing
#   _recipe_options="stage stop_stage nj"    # which variables are options
#   . "$(dirname "$0")/../utils/common.sh"   # parses "$@" into those variables
#
# Provides: log, die, parse_options "$@", stage_enabled N, stage_done NAME,
# mark_done NAME, run_stage N NAME CMD..., use_audiocl, need_cmd CMD,
# apt_install PKG..., and $recipe_dir.

# Timestamped progress line on stderr: "2026-11-22 23:59:01 (run.sh:42:main) message".
log() {
  local fname=${BASH_SOURCE[1]:-$0}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname##*/}:${BASH_LINENO[0]:-0}:${FUNCNAME[1]:-main}) $*" >&2
}

die() {
  log "ERROR: $*"
  exit 1
}

# --key value / --key=value for every variable named in $_recipe_options
# (the caller sets the defaults and that list before sourcing this file).
# Dashes and underscores are interchangeable: --stop-stage == --stop_stage.
# Unknown options are an error naming the option (a typo must not be ignored).
parse_options() {
  while [ $# -gt 0 ]; do
    case "$1" in
      -h|--help)
        echo "usage: $0 [--stage N] [--stop-stage N] [--<option> VALUE ...]" >&2
        echo "options (current values):" >&2
        local v
        for v in ${_recipe_options:-stage stop_stage}; do echo "  --${v//_/-} ${!v-}" >&2; done
        exit 0 ;;
      --*=*)
        local key=${1%%=*} value=${1#*=}
        shift
        set -- "$key" "$value" "$@"
        continue ;;
      --*)
        local name=${1#--}
        name=${name//-/_}
        if ! [[ " ${_recipe_options:-stage stop_stage} " == *" ${name} "* ]]; then
          die "unknown option $1 (known: $(for v in ${_recipe_options:-stage stop_stage}; do printf -- '--%s ' "${v//_/-}"; done))"
        fi
        [ $# -ge 2 ] || die "option $1 needs a value"
        printf -v "${name}" '%s' "$2"
        shift 2 ;;
      *)
        die "unexpected argument '$1' (options are --key value)" ;;
    esac
  done
}

# True when stage N lies in [stage, stop_stage].
stage_enabled() {
  [ "${stage}" -le "$1" ] && [ "${stop_stage}" -ge "$1" ]
}

# .done markers make stages idempotent: a finished stage is skipped on re-run.
# Delete the marker (or pass --force true where a recipe offers it) to redo it.
stage_done() {
  [ -f "${done_dir:?}/$1.done" ]
}

mark_done() {
  mkdir -p "${done_dir:?}"
  date '+%Y-%m-%d %H:%M:%S' > "${done_dir}/$1.done"
}

# run_stage N NAME CMD...: run CMD as stage N when N is in [stage, stop_stage],
# unless ${done_dir}/stageN.done exists (and ${force} is not true); log its wall
# time, and append "N<TAB>NAME<TAB>seconds<TAB>load average" to ${stage_timings}
# when the recipe sets it. A different marker folder for one stage:
# `done_dir=DIR run_stage ...`.
run_stage() {
  local n=$1 name=$2
  shift 2
  stage_enabled "${n}" || return 0
  if [ "${force:-false}" != true ] && stage_done "stage${n}"; then
    log "stage ${n} (${name}): done before, skipped (remove ${done_dir}/stage${n}.done to redo)"
    return 0
  fi
  # On a terminal a line when the stage starts and one when it ends; in a log file
  # (stderr not a terminal) one line per stage, when it ends, and if a command of
  # the stage fails (set -e exits), the EXIT trap still says which stage it was.
  if [ -t 2 ]; then
    log "stage ${n}: ${name}"
  else
    _stage_running="stage ${n}: ${name}"
    trap '[ -z "${_stage_running:-}" ] || log "${_stage_running}: failed (exit $?)"' EXIT
  fi
  local t0 dt
  t0=$(now_s)
  "$@"
  dt=$(( $(now_s) - t0 ))
  _stage_running=
  if [ -n "${stage_timings:-}" ]; then
    # the 1-minute load average says how shared the machine was while the stage ran
    printf '%s\t%s\t%s\t%s\n' "${n}" "${name}" "${dt}" "$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo -)" \
      >> "${stage_timings}"
  fi
  mark_done "stage${n}"
  if [ -t 2 ]; then
    log "stage ${n}: finished in ${dt} s"
  else
    log "stage ${n}: ${name}: finished in ${dt} s"
  fi
}

# The audiocl CLI on PATH (the repository's .venv, made by `make install`, when no
# virtual environment is active) and the offline settings every recipe runs with.
# Call from the recipe's folder (recipes/<name>).
use_audiocl() {
  if [ -z "${VIRTUAL_ENV:-}" ] && [ -x ../../.venv/bin/python ]; then
    PATH="$(cd ../../.venv/bin && pwd):${PATH}"
    export PATH
  fi
  need_cmd audiocl "install audiocl first: make install (from the repository root)"
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
}

need_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH${2:+ ($2)}"
}

# Install Debian packages that are missing. As root: apt-get install -y. Otherwise
# print the exact command for the user and stop (we never call sudo ourselves).
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ]; then
    log "apt-get install -y ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  else
    echo "missing Debian packages; run as root, then re-run this script:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 2
  fi
}

# Seconds since the epoch, for per-stage timings.
now_s() { date +%s; }

# Recipes cd into their own folder before sourcing this file (so that a run.sh
# started from anywhere, by a relative path too, finds conf/, local/, data/).
recipe_dir=$(pwd)
parse_options "$@"
