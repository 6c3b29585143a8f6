"""A plain, non-editable install works: a wheel of the project, installed into a fresh virtual environment,
answers every console script's -h and imports nnqc, nnqc_trainers and dataset_conversion from the installed
copy (not from the checkout, which the suite's own environment has as an editable install).

Fast and offline: the wheel is built without build isolation and installed without dependencies; the fresh
environment reuses the torch and nnunetv2 already installed. `--system-site-packages` reaches the base
interpreter's packages; when the suite itself runs in a virtual environment (as ./run_tests.sh does), that
environment's site-packages are added by a .pth file, which puts the folder on sys.path without running the
.pth files inside it, so the editable install's import hook never points back into the checkout.
"""
import ast
import importlib.metadata
import os
import re
import shutil
import site
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPECTED_SCRIPTS = {"nnQC_convert", "nnQC_plan_and_preprocess", "nnQC_train", "nnQC_predict", "nnQC_evaluate",
                    "nnQC_make_candidates", "nnQC_export_model_to_zip", "nnQC_install_pretrained_model_from_zip"}
_NOT_SOURCE = {".venv", ".git", "build", "dist", "nnqc_demo_data", ".pytest_cache", ".ruff_cache"}


def _ignore(folder: str, names: list[str]) -> set[str]:
    top = os.path.samefile(folder, ROOT)
    return {n for n in names if (top and n in _NOT_SOURCE) or n == "__pycache__" or n.endswith(".egg-info")
            or (os.path.basename(folder) == "benchmarks" and n == "results")}


# each step takes seconds offline; a step still running after this is stuck (pip waiting on a network, say)
STEP_TIMEOUT_S = 600


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, **kwargs)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
    return result


def _console_scripts(wheel: str) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt"))
        text = archive.read(name).decode()
        assert not [n for n in archive.namelist() if n.startswith("tests/")]
    section = text.split("[console_scripts]", 1)[1].split("\n[", 1)[0]
    return {line.split("=", 1)[0].strip() for line in section.splitlines() if "=" in line}


def test_wheel_installs_into_a_fresh_environment_and_runs_from_outside_the_checkout(tmp_path):
    # build from a copy: pip builds in the source tree, and the checkout must stay as it is
    source, wheels, venv, elsewhere = (tmp_path / n for n in ("source", "wheels", "venv", "elsewhere"))
    shutil.copytree(ROOT, source, ignore=_ignore)
    elsewhere.mkdir()
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(wheels), str(source)])
    (wheel,) = [str(wheels / w) for w in os.listdir(wheels) if w.endswith(".whl")]
    scripts = _console_scripts(wheel)
    assert scripts == EXPECTED_SCRIPTS

    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)])
    python = str(venv / "bin" / "python")
    venv_site = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip()
    with open(os.path.join(venv_site, "_nnqc_test_reuse_installed.pth"), "w") as f:
        f.write("\n".join(p for p in site.getsitepackages() if os.path.isdir(p)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--ignore-installed",
          "-q", wheel])

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    processes = {name: subprocess.Popen([str(venv / "bin" / name), "-h"], cwd=elsewhere, env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in sorted(scripts)}
    for name, process in processes.items():
        try:
            out, err = process.communicate(timeout=STEP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for other in processes.values():
                other.kill()
            raise
        assert process.returncode == 0 and "usage:" in out, f"{name} -h failed:\n{out}\n{err}"

    where = _run([python, "-c", "import nnqc, nnqc_trainers, dataset_conversion\n"
                                "for m in (nnqc, nnqc_trainers, dataset_conversion): print(m.__file__)"],
                 cwd=elsewhere, env=env).stdout.split()
    assert len(where) == 3
    for path in where:
        path = os.path.realpath(path)
        assert path.startswith(os.path.realpath(venv_site) + os.sep), f"imported {path}, not the installed copy"
        assert not path.startswith(os.path.realpath(ROOT) + os.sep)


def _third_party_imports() -> dict[str, str]:
    """{top-level module: a file importing it} for every module the installed packages import that is neither
    the standard library nor one of the project's own packages."""
    own = {"nnqc", "nnqc_trainers", "dataset_conversion"}
    found = {}
    for package in own:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in (f for f in files if f.endswith(".py")):
                path = os.path.join(folder, name)
                for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                    if isinstance(node, ast.Import):
                        modules = [alias.name for alias in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        modules = [node.module]
                    else:
                        continue
                    for module in (m.split(".")[0] for m in modules):
                        if module not in sys.stdlib_module_names and module not in own and module != "__future__":
                            found.setdefault(module, os.path.relpath(path, ROOT))
    return found


def test_setup_declares_every_package_the_code_imports():
    tree = ast.parse(open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read())
    requirements = next(node.value for node in ast.walk(tree)
                        if isinstance(node, ast.keyword) and node.arg == "install_requires")
    declared = {re.split(r"[<>=!~ \[]", element.value, maxsplit=1)[0].lower().replace("_", "-")
                for element in requirements.elts}
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for module, where in _third_party_imports().items():
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not names & declared:
            undeclared[module] = f"{where} (distribution {', '.join(sorted(names))})"
    assert not undeclared, f"imported but not in setup.py's install_requires: {undeclared}"
    assert {"torch", "nnunetv2", "simpleitk", "nibabel", "blosc2", "batchgenerators"} <= declared
