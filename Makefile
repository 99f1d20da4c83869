# ManiFlow runtime: the two newcomer commands are `make demo` and `make test`.
# Both bootstrap first (idempotent; everything is cached in ignored folders).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
# Everything the bootstrap installs from; any change re-runs it.
BOOTSTRAP_INPUTS := tests/requirements.txt tests/requirements-lerobot.txt tests/lerobot/patch_py311.py
STAMP := $(VENV)/.bootstrap-$(shell cat $(BOOTSTRAP_INPUTS) | sha256sum | cut -c1-12)
# The official ROS 2 message descriptions (Jazzy, Kilted) the type-hash test checks against.
ROS_MSGS_STAMP := .cache/ros-msgs/.done-$(shell cat scripts/ros_msg_json.py | sha256sum | cut -c1-12)
# A real ROS 2 node for the tests (Jazzy rclpy + Fast DDS from PyPI), in its own venv:
# its ros-wheels-bootstrapper .pth re-executes every Python of that venv.
VENV_ROS2 := .venv-ros2
ROS2_REQUIREMENTS := tests/ros2/requirements.txt
ROS2_STAMP := $(VENV_ROS2)/.bootstrap-$(shell cat $(ROS2_REQUIREMENTS) | sha256sum | cut -c1-12)
export PIP_CACHE_DIR := $(CURDIR)/.cache/pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: bootstrap demo test bench bench-act bench-train fixtures clean-venv bundled-policy pretrain-tactile slip-table eval-bundled gpu-bundle gpu-check eval-bus bench-bus bench-lateness bench-transport bench-cameras eval-rtc fusion-table

## Install what a fresh machine lacks: a local venv with ONNX Runtime, libtorch (torch wheel), onnx, numpy,
## and LeRobot 0.6.1 (for the round-trip tests and ACT).
bootstrap: $(STAMP) $(ROS_MSGS_STAMP) $(ROS2_STAMP)

## Jazzy rclpy with rmw_fastrtps_cpp and the message packages (~250 MB) for runtime/tests/ros2_rclpy.rs.
$(ROS2_STAMP): $(ROS2_REQUIREMENTS)
	@echo "bootstrap: creating $(VENV_ROS2) (Jazzy rclpy + Fast DDS, tests/ros2/requirements.txt)"
	@test -x $(VENV_ROS2)/bin/python || $(PYTHON) -m venv $(VENV_ROS2)
	$(VENV_ROS2)/bin/pip install -r $(ROS2_REQUIREMENTS)
	ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST RMW_IMPLEMENTATION=rmw_fastrtps_cpp $(VENV_ROS2)/bin/python -c "import rclpy, sensor_msgs.msg, std_msgs.msg, trajectory_msgs.msg"
	@rm -f $(VENV_ROS2)/.bootstrap-*
	@touch $@

$(ROS_MSGS_STAMP): scripts/ros_msg_json.py $(STAMP)
	@rm -rf .cache/ros-msgs
	$(VENV)/bin/python scripts/ros_msg_json.py .cache/ros-msgs
	@touch $@

$(STAMP): $(BOOTSTRAP_INPUTS)
	@echo "bootstrap: creating $(VENV) and installing tests/requirements.txt (first run downloads ~3 GB; cached after)"
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -r tests/requirements.txt
	@# LeRobot 0.6.1 on Python 3.11: its dependency closure pinned in the file, installed
	@# without resolution (its metadata wants Python >= 3.12 and older numpy/pandas),
	@# then its PEP 695 syntax rewritten for 3.11 (idempotent; fails if the code differs).
	$(VENV)/bin/pip install --no-deps --ignore-requires-python -r tests/requirements-lerobot.txt
	$(VENV)/bin/python tests/lerobot/patch_py311.py
	@# An ONNX Runtime that is too old, for the test of the runtime's refusal (never on any search path).
	$(VENV)/bin/pip install --no-deps --target .cache/onnxruntime-too-old onnxruntime==1.22.1
	@rm -f $(VENV)/.bootstrap-*
	@touch $@

## The main job on the embedded default: the simulated SO-101 (`maniflow sim`) and the
## robot node (`maniflow run`) with the bundled policy, over zenoh on loopback, for 20 s.
demo: bootstrap
	cargo build --bin maniflow   # dev profile: the binary the tests build (dependencies, bridge, runtime optimised)
	@mkdir -p runs
	@target/debug/maniflow sim --duration 30s --quiet --stats-json runs/demo-sim.json & sim=$$!; \
	target/debug/maniflow run --config launch/so101.toml --duration 20s --stats-json runs/demo-stats.json; rc=$$?; \
	kill -INT $$sim 2>/dev/null; wait $$sim 2>/dev/null; \
	echo "final stats (runs/demo-stats.json):"; cat runs/demo-stats.json; echo; \
	echo "simulator episodes (runs/demo-sim.json):"; cat runs/demo-sim.json; echo; exit $$rc

## The full test suite (Rust workspace + fixture consistency check in Python).
test: bootstrap
	$(VENV)/bin/python models/fixtures/make_fixtures.py --check
	$(VENV)/bin/python tests/launch/test_launch_xml.py
	cargo test --workspace

## Latency benchmark of the fixture ManiFlow package at N = 1 and N = 2 (release build).
bench: bootstrap
	cargo build --release -p maniflow-runtime --bin maniflow
	target/release/maniflow bench models/fixtures/tiny-maniflow --steps 1 --iters 1000
	target/release/maniflow bench models/fixtures/tiny-maniflow --steps 2 --iters 1000
	target/release/maniflow bench models/fixtures/tiny-act --iters 1000
	target/release/maniflow transport-bench

## LeRobot ACT, 2 cameras at 96x96 and 640x480 (random default ACT, exported by
## models/export/lerobot_act.py): LeRobot's per-tick path and model call in PyTorch
## next to `maniflow bench` on the same packages, same run, same thread count.
bench-act: bootstrap
	cargo build --bin maniflow   # dev profile: dependencies optimised, runtime at opt-level 2
	$(VENV)/bin/python tests/lerobot/bench_act.py --threads 1

## Trainer throughput: so101-cpu (batch 64) and upstream-image (batch 8) training steps/s,
## each next to the PyTorch reference model timed in the same run (ratio and peak RSS).
bench-train: bootstrap
	cargo build --workspace --bins   # dev profile: dependencies (libtorch calls) optimised
	target/debug/maniflow-train bench --config so101-cpu --batch 64 --steps 10 --threads 2 --reference --profile
	target/debug/maniflow-train bench --config upstream-image --batch 8 --steps 3 --threads 2 --reference --profile

## Regenerate the fixture packages (changes their sha256 if torch changes).
fixtures: bootstrap
	$(VENV)/bin/python models/fixtures/make_fixtures.py

clean-venv:
	rm -rf $(VENV) $(VENV_ROS2)

## The bundled policy from scratch (models/so101-sim-pick): record scripted-expert
## demonstrations, train so101-sim-pick on-device, check its health, export (with
## the parity gate) and evaluate in closed loop at N = 1, 2, 10. Dev profile
## (dependencies, bridge and runtime optimised): the binaries the tests build.
BUNDLED_EPISODES ?= 200
BUNDLED_STEPS ?= 3000
bundled-policy: bootstrap
	cargo build --bins
	@mkdir -p runs data
	rm -rf data/so101-sim-pick runs/so101-sim-pick models/so101-sim-pick.new
	target/debug/maniflow record --config launch/so101.toml --expert --in-process --seed 1000 \
		--episodes $(BUNDLED_EPISODES) --out data/so101-sim-pick --summary-json runs/so101-sim-pick-record.json
	set -o pipefail; time target/debug/maniflow-train train --config trainer/configs/so101-sim-pick.toml \
		--dataset data/so101-sim-pick --out runs/so101-sim-pick --steps $(BUNDLED_STEPS) 2>&1 | tee runs/so101-sim-pick-train.log
	target/debug/maniflow-train health runs/so101-sim-pick
	target/debug/maniflow-train export runs/so101-sim-pick --out models/so101-sim-pick.new --ema --name so101-sim-pick
	$(MAKE) eval-bundled POLICY=models/so101-sim-pick.new

## Tactile MAE pretraining (seed 001, joint mode) on recorded pressure images:
## record scripted-expert episodes with the pads' pressure images (PNG cameras),
## pretrain, and judge the run with seed 001's health rules (plots in runs/tactile-mae/plots).
TACTILE_EPISODES ?= 100
TACTILE_EPOCHS ?= 20
pretrain-tactile: bootstrap
	cargo build --bins
	@mkdir -p runs data
	rm -rf data/so101-sim-tactile runs/tactile-mae
	target/debug/maniflow record --config launch/so101.toml --expert --in-process --seed 2000 --video png \
		--episodes $(TACTILE_EPISODES) --out data/so101-sim-tactile --quiet
	set -o pipefail; time target/debug/maniflow-train pretrain-tactile --config trainer/configs/tactile-mae.toml \
		--dataset data/so101-sim-tactile --out runs/tactile-mae --epochs $(TACTILE_EPOCHS) --quiet 2>&1 | tee runs/tactile-mae.log
	target/debug/maniflow-train health runs/tactile-mae

## The touch-decides table (issue 20): record the touch expert on pick-slip (200
## episodes, seed 1000), pretrain the tactile MAE on its pressure images, train the
## bundled policy's config four ways (no tactile, taxels, the pads' pressure images
## as a 512-cell vector, the pressure images through the frozen pretrained MAE),
## evaluate each on 50 pick-slip episodes (seed 0; the report's expert baseline is
## the first row, its `outcomes` say how the others failed).
SLIP_STEPS ?= 3000
SLIP_MAE_EPOCHS ?= 10
slip-table: bootstrap
	cargo build --bins
	@mkdir -p runs data
	rm -rf data/so101-sim-slip runs/slip-*
	target/debug/maniflow record --config launch/so101.toml --expert --in-process --sim-task pick-slip --seed 1000 \
		--episodes 200 --video png --out data/so101-sim-slip --quiet --summary-json runs/slip-record.json
	target/debug/maniflow-train pretrain-tactile --config trainer/configs/tactile-mae.toml --dataset data/so101-sim-slip \
		--out runs/slip-mae-pretrain --epochs $(SLIP_MAE_EPOCHS) --quiet
	target/debug/maniflow-train health runs/slip-mae-pretrain || true
	sed 's/^name = .*/name = "so101-sim-slip-mae"/; s/^tactile_key = .*/tactile_key = "observation.tactile_image"/; s/^tactile = "taxels"/tactile = "mae"/' \
		trainer/configs/so101-sim-pick.toml > runs/slip-mae.toml
	printf '\n[encoder.tactile_mae]\nrun = "runs/slip-mae-pretrain"\nfreeze = true\n' >> runs/slip-mae.toml
	sed 's/^tactile = "taxels"/tactile = "none"/; s/^name = .*/name = "so101-sim-slip-notactile"/' trainer/configs/so101-sim-pick.toml > runs/slip-notactile.toml
	sed 's/^name = .*/name = "so101-sim-slip-taxels"/' trainer/configs/so101-sim-pick.toml > runs/slip-taxels.toml
	sed 's/^name = .*/name = "so101-sim-slip-pressimg"/; s/^tactile_key = .*/tactile_key = "observation.tactile_image"/' trainer/configs/so101-sim-pick.toml > runs/slip-pressimg.toml
	sed 's|^topic = "tactile"       # std_msgs/Float32MultiArray of taxels|topic = "tactile/image"|; s|^type = "taxels"|type = "pressure_image"|; s|^path = "../models/so101-sim-pick"|path = "slip-pressimg-pkg"|' launch/so101.toml > runs/slip-pressimg-node.toml
	sed 's|path = "slip-pressimg-pkg"|path = "slip-mae-pkg"|' runs/slip-pressimg-node.toml > runs/slip-mae-node.toml
	for arm in notactile taxels pressimg mae; do \
		target/debug/maniflow-train train --config runs/slip-$$arm.toml --dataset data/so101-sim-slip --out runs/slip-$$arm --steps $(SLIP_STEPS) --quiet || exit 1; \
		target/debug/maniflow-train export runs/slip-$$arm --out runs/slip-$$arm-pkg --ema --name so101-sim-slip-$$arm || exit 1; \
	done
	target/debug/maniflow eval --policy runs/slip-notactile-pkg --task pick-slip --episodes 50 --seed 0 --episode-s 8 --json runs/slip-notactile-eval.json
	target/debug/maniflow eval --policy runs/slip-taxels-pkg --task pick-slip --episodes 50 --seed 0 --episode-s 8 --json runs/slip-taxels-eval.json
	target/debug/maniflow eval --policy runs/slip-pressimg-pkg --config runs/slip-pressimg-node.toml --task pick-slip --episodes 50 --seed 0 --episode-s 8 --json runs/slip-pressimg-eval.json
	target/debug/maniflow eval --policy runs/slip-mae-pkg --config runs/slip-mae-node.toml --task pick-slip --episodes 50 --seed 0 --episode-s 8 --json runs/slip-mae-eval.json

## Closed-loop evaluation of the bundled policy (50 episodes, seed 0) at N = 1, 2, 10.
POLICY ?= models/so101-sim-pick
eval-bundled:
	cargo build --bin maniflow
	@mkdir -p runs
	for n in 1 2 10; do target/debug/maniflow eval --policy $(POLICY) --episodes 50 --seed 0 --steps $$n --json runs/eval-n$$n.json || exit 1; done

## Issue 21's table (seed 004): tokens and concat vs cross-attention fusion, with and without 4 expert
## heads, two seeds each, the same staged schedule, on the bundled policy's 200 pick
## demonstrations; 50-episode evals (4 at once) and `maniflow-train compare` reports in
## runs/fusion/ (scripts/fusion_table.sh; FUSION_STEPS 1500: about 95 min on the 2-core VM).
FUSION_STEPS ?= 1500
fusion-table: bootstrap
	cargo build --bins
	STEPS=$(FUSION_STEPS) scripts/fusion_table.sh

## Issue 17's table: today's policy (BASE_POLICY) with `async` and with the `rtc` blend,
## the prefix-conditioned one (RTC_POLICY, `maniflow-train train --config
## so101-sim-pick-rtc` + export) with `rtc`, at N = 1 and 2, seeds 0 and 1, 50 episodes
## each (about 60 minutes); JSON in runs/eval-rtc/, the markdown table on stdout.
BASE_POLICY ?= models/so101-sim-pick
RTC_POLICY ?= runs/so101-sim-pick-rtc-pkg
eval-rtc:
	cargo build --bin maniflow
	@mkdir -p runs/eval-rtc
	for s in 0 1; do for n in 1 2; do \
	  target/debug/maniflow eval --policy $(BASE_POLICY) --episodes 50 --seed $$s --steps $$n --executor async --json runs/eval-rtc/async-n$$n-s$$s.json || exit 1; \
	  target/debug/maniflow eval --policy $(BASE_POLICY) --episodes 50 --seed $$s --steps $$n --executor rtc --json runs/eval-rtc/blend-n$$n-s$$s.json || exit 1; \
	  target/debug/maniflow eval --policy $(RTC_POLICY) --episodes 50 --seed $$s --steps $$n --executor rtc --json runs/eval-rtc/prefix-n$$n-s$$s.json || exit 1; \
	done; done
	scripts/rtc_table.py $$(for k in async blend prefix; do for n in 1 2; do for s in 0 1; do echo $$k=runs/eval-rtc/$$k-n$$n-s$$s.json; done; done; done)

## GPU, step 1, here (no GPU needed): the stripped binaries, ONNX Runtime's core library
## and its CUDA provider (trimmed to GPU_SM, default 90 = H100/H200) in .gpu-bundle/.
gpu-bundle: bootstrap
	scripts/gpu/bundle.sh

## GPU, step 2, on the GPU machine, from the repository root with .gpu-bundle/ carried:
## preprocessing, training and (with the provider) inference checks; about 8 minutes.
gpu-check:
	scripts/gpu/check.sh

## The bundled policy through the arm's servo bus (`maniflow sim --serial` + the node's [robot]
## path) next to the zenoh path: 50 episodes each, seed 0, N = 1.
eval-bus:
	cargo build --bin maniflow
	@mkdir -p runs
	target/debug/maniflow eval --policy $(POLICY) --episodes 50 --seed 0 --steps 1 --no-expert --json runs/eval-zenoh-n1.json
	target/debug/maniflow eval --policy $(POLICY) --episodes 50 --seed 0 --steps 1 --no-expert --bus --json runs/eval-bus-n1.json

## Bus time per control tick (SYNC_READ 6 positions + SYNC_WRITE 6 goals) on the STS3215
## emulator at 1 Mbps: our driver next to LeRobot 0.6.1's get_observation + send_action.
bench-bus: bootstrap
	cargo build --bin maniflow
	@mkdir -p runs
	target/debug/maniflow bus-bench --ticks 2000 --json runs/bench-bus.json

## Control-loop wake-up lateness at 100 Hz with the bus path: quiet, both cores busy,
## a memory-heavy neighbour (with and without SCHED_FIFO + mlockall); cyclictest beside
## each run when rt-tests is installed (apt install rt-tests). About 3 minutes.
bench-lateness: bootstrap
	cargo build --bin maniflow
	PYTHON=$(VENV)/bin/python scripts/bench/lateness.sh

## Transport latency between two processes on loopback (about 2 minutes): ours over native
## zenoh (shared memory off and on), rmw_zenoh and DDS, next to two eclipse-zenoh Python
## processes and a real Jazzy rclpy node (.venv-ros2) to us and back and to another rclpy
## node, all in the same run. Dev profile (dependencies, bridge and runtime optimised).
bench-transport: bootstrap
	cargo build --bin maniflow
	@mkdir -p runs
	target/debug/maniflow transport-bench --json runs/bench-transport.json

## Camera path per 640x480 frame, p50/p99: MJPEG decode (or YUYV -> RGB), then the bundled
## policy's resize + normalise (README, Cameras without ROS). Dev profile, one thread.
bench-cameras:
	cargo build --bin maniflow
	target/debug/maniflow cameras --bench --frames 1000
