#!/usr/bin/env bash
# Issue 21's table (seed 004): tokens and concat vs cross-attention fusion, each with and without
# 4 expert heads, trained on the same pick demonstrations for the same steps (two seeds
# each) with the same staged schedule, 50-episode evals, and `maniflow-train compare`
# reports. Called by `make fusion-table`; STEPS, SEEDS, EVAL_EPISODES, PARALLEL_EVALS from
# the environment. Needs data/so101-sim-pick (`make bundled-policy` records it, or the
# record line below).
set -euo pipefail
STEPS=${STEPS:-1500}
SEEDS=${SEEDS:-"0 1"}
EVAL_EPISODES=${EVAL_EPISODES:-50}
PARALLEL_EVALS=${PARALLEL_EVALS:-4}
OUT=runs/fusion
mkdir -p "$OUT" data
if [ ! -f data/so101-sim-pick/meta/info.json ]; then
    target/debug/maniflow record --config launch/so101.toml --expert --in-process --seed 1000 \
        --episodes 200 --out data/so101-sim-pick --quiet --summary-json "$OUT/record.json"
fi
# Stage boundaries: warm-up to 25 % of the steps, transition to 60 %, fine-tune after.
w=$((STEPS / 4)); t=$((STEPS * 6 / 10))
stages() { # $1 = "experts" or ""
    local tw="" tt="" tf=""
    if [ "$1" = experts ]; then
        printf '\n[model.router]\nload_balance = 0.01\ntemperature = 1.0\n'
        tw=$'router_temperature = 2.0\n'; tt=$'router_temperature = 1.0\n'; tf=$'router_temperature = 0.5\n'
    fi
    printf '\n[[train.stages]]\nname = "warm-up"\nuntil = %d\n%s\n[[train.stages]]\nname = "transition"\nuntil = %d\n%s\n[[train.stages]]\nname = "fine-tune"\n%s' "$w" "$tw" "$t" "$tt" "$tf"
}
arms=${ARMS:-"tokens tokens-experts concat concat-experts xattn xattn-experts"}
for arm in $arms; do
    case $arm in tokens*) fusion=tokens ;; concat*) fusion=concat ;; *) fusion=cross_attention ;; esac
    case $arm in *-experts) ex=$'\nexperts = 4'; kind=experts ;; *) ex=""; kind="" ;; esac
    for s in $SEEDS; do
        cfg="$OUT/$arm-s$s.toml"
        sed "s/^name = .*/name = \"fusion-$arm-s$s\"/; s/^seed = 0/seed = $s/; s/^fusion = \"tokens\"/fusion = \"$fusion\"${ex//$'\n'/\\n}/" \
            trainer/configs/so101-sim-pick.toml > "$cfg"
        stages "$kind" >> "$cfg"
        if [ ! -f "$OUT/$arm-s$s-pkg/policy.toml" ]; then
            rm -rf "$OUT/$arm-s$s"
            start=$SECONDS
            target/debug/maniflow-train train --config "$cfg" --dataset data/so101-sim-pick --out "$OUT/$arm-s$s" \
                --steps "$STEPS" --quiet
            echo "$arm-s$s: $STEPS steps in $((SECONDS - start)) s" | tee -a "$OUT/train-times.txt"
            target/debug/maniflow-train health "$OUT/$arm-s$s" > "$OUT/$arm-s$s-health.txt" || true
            target/debug/maniflow-train export "$OUT/$arm-s$s" --out "$OUT/$arm-s$s-pkg" --ema --name "fusion-$arm-s$s"
        fi
    done
done
# Evals: real time and light on the CPU, so PARALLEL_EVALS at once (own sim, own port each).
jobs_list=()
for arm in $arms; do for s in $SEEDS; do jobs_list+=("$arm-s$s"); done; done
printf '%s\n' "${jobs_list[@]}" | xargs -P "$PARALLEL_EVALS" -I{} sh -c \
    "[ -f $OUT/{}-eval.json ] || target/debug/maniflow eval --policy $OUT/{}-pkg --episodes $EVAL_EPISODES --seed 0 --episode-s 8 --json $OUT/{}-eval.json > $OUT/{}-eval.log 2>&1 || { echo 'eval {} failed, see $OUT/{}-eval.log'; exit 255; }"
runs() { local a=$1; local out=""; for s in $SEEDS; do out="$out${out:+,}$OUT/$a-s$s"; done; echo "$out"; }
evals() { local a=$1; local out=""; for s in $SEEDS; do out="$out${out:+,}$OUT/$a-s$s-eval.json"; done; echo "$out"; }
for pair in ${PAIRS:-"tokens:xattn-experts" "tokens:xattn" "concat:xattn" "tokens-experts:xattn-experts" "concat-experts:xattn-experts" "tokens:tokens-experts" "concat:concat-experts" "xattn:xattn-experts"}; do
    pair=${pair/:/ }
    set -- $pair
    target/debug/maniflow-train compare "$(runs "$1")" "$(runs "$2")" --eval-a "$(evals "$1")" --eval-b "$(evals "$2")" \
        --label-a "$1" --label-b "$2" --out "$OUT/compare-$1-vs-$2" > "$OUT/compare-$1-vs-$2.txt"
    echo "== $1 vs $2: $OUT/compare-$1-vs-$2/compare.md"
done
