"""tools/gpu_check.sh on a machine without CUDA (one-line refusal, --dry-run), and the promise it rests on:
the tools it runs import with none of mmengine, DeepSpeed, xformers or flash-attn installed."""
import os
import subprocess
import sys

from tests.dist.common import REPO

SCRIPT = os.path.join(REPO, "tools", "gpu_check.sh")
HIDDEN = ("mmengine", "deepspeed", "xformers", "flash_attn")


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable)
    env.update(extra)
    return env


def test_refuses_without_cuda_in_one_line(tmp_path):
    proc = subprocess.run(["bash", SCRIPT, str(tmp_path / "out")], env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs a CUDA device" in lines[0] and "--dry-run" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
    usage = subprocess.run(["bash", SCRIPT], env=_env(), capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and usage.stderr.startswith("usage:")


def test_dry_run_lists_every_part_with_its_time_limit(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", SCRIPT, "--dry-run", str(out)], env=_env(T_E2E="77"), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    parts = {ln.split("]")[0].lstrip("["): ln for ln in proc.stdout.splitlines() if ln.startswith("[")}
    for name in ("tests", "attention_eager", "attention_compiled_424x800", "attention_compiled_848x1600",
                 "attention_methods", "e2e", "e2e_block_scope", "step_time"):
        assert "timeout -k 10 " in parts[name] and f"{out}/{name}.log" in parts[name]
    assert "tests/test_kernels.py" in parts["tests"] and "tests/test_attention_backends_cuda.py" in parts["tests"]
    eager = parts["attention_eager"]
    for arg in ("--resolutions 848x1600,424x800", "--ratios 0.26,0.5", "--passes fwd,fwd+bwd", "--dtype bfloat16",
                f"--out {out}"):
        assert arg in eager
    assert "--compile" not in eager and "--compile" in parts["attention_compiled_848x1600"]
    for name in ("attention_eager", "attention_compiled_424x800", "attention_compiled_848x1600"):
        assert "--methods coredit " in parts[name]  # CoReDiT alone there; every method in its own part
    methods = parts["attention_methods"]
    for arg in ("--methods coredit,coredit_copy,coredit_sharp,coredit_merge,coredit_kv,tome,todo",
                "--resolutions 848x1600,424x800", "--passes fwd,fwd+bwd", "--dtype bfloat16", "--repeats 5",
                "--no-split", f"--out {out}", "--tag gpu_methods"):
        assert arg in methods
    assert "--compile" not in methods and "timeout -k 10 75 " in methods
    limits = [int(ln.split("timeout -k 10 ")[1].split()[0]) for ln in parts.values()]
    assert sum(limits) - 77 + 105 <= 10 * 60  # worst case with the default limits (T_E2E 105), at most 10 minutes
    assert "timeout -k 10 77 " in parts["e2e"]  # limits come from the environment
    assert "--resolution 848x1600" in parts["e2e"] and "|| " in parts["e2e"]  # then the smaller shape
    assert parts["e2e"].count("--cross-view qkv") == 2  # dense, self-only and + cross-view at 848x1600 (or 424x800)
    block = parts["e2e_block_scope"]  # dense, attention scope (qkv) and block scope, interleaved in one run
    for arg in ("tools/bench_e2e.py --scope block", "--preset xl", "--resolutions 848x1600,424x800",
                "--ratios 0.4,0.5", "--cross-view qkv", "--dtype bfloat16", "--no-split", f"--out {out}",
                "--tag gpu_block_scope", "timeout -k 10 80 "):
        assert arg in block
    step = parts["step_time"]  # the front's cost_time on this GPU
    for arg in ("tools/bench_step_time.py --device cuda", "--resolution 848x1600", f"--out {out}/step_time_cuda.json",
                "timeout -k 10 60 "):
        assert arg in step
    assert "tests/test_front_magicdrive.py" in parts["tests"]
    assert not out.exists()  # nothing ran


def test_benchmarks_and_gpu_tests_import_without_the_optional_packages(tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    for m in HIDDEN:
        (hide / f"{m}.py").write_text("raise ImportError('not on the GPU machine')\n")
    env = _env(PYTHONPATH=os.pathsep.join([str(hide), REPO]))
    probe = subprocess.run([sys.executable, "-c", "import mmengine"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "not on the GPU machine" in probe.stderr  # the hiding works
    tools = os.path.join(REPO, "tools")
    runs = [
        [sys.executable, "-m", "pytest", "-q", "--co", "-p", "no:cacheprovider", "tests/test_kernels.py",
         "tests/test_attention_backends_cuda.py"],
        [sys.executable, os.path.join(tools, "bench_attention.py"), "--device", "cpu", "--resolutions", "64x64",
         "--ratios", "0.5", "--passes", "fwd,fwd+bwd", "--warmup", "0", "--repeats", "1", "--no-split", "--hidden",
         "32", "--heads", "2", "--batch", "1", "--out", str(tmp_path), "--tag", "t"],
        [sys.executable, os.path.join(tools, "bench_e2e.py"), "--device", "cpu", "--preset", "tiny", "--resolution",
         "32x56", "--latent-frames", "2", "--warmup", "0", "--repeats", "1", "--out", str(tmp_path), "--tag", "t"],
    ]
    for cmd in runs:
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]
    assert (tmp_path / "attention_t.json").is_file() and (tmp_path / "e2e_t.json").is_file()
