"""The release checks (tools/wheel_check.py, tools/cuda_plugin.py) and what they guard: the native module
links neither torch nor a shared CUDA runtime or driver, and a CUDA plugin's copy of it loads beside it.
tools/build_wheels.sh runs them on real wheels; these tests show they hold here and can fail."""

import importlib.util
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import zipfile

import pytest

import fastppo
from fastppo import _backend

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(_backend._core is None or not sys.platform.startswith("linux"),
                                reason="inspects the built extension as an ELF file")


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wheel_check = _tool("wheel_check")
CORE = pathlib.Path(_backend._core.__file__)


def test_the_native_module_is_torch_free_and_links_no_shared_cuda():
    assert wheel_check.extension_problems(CORE) == []


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ to build the offending libraries")
def test_the_linkage_check_catches_torch_cuda_and_foreign_libraries(tmp_path):
    for soname in ("libtorch_cpu.so", "libcudart.so.13", "libcuda.so.1", "libfoo.so.1"):
        subprocess.run(["g++", "-shared", "-fPIC", "-x", "c++", "/dev/null", f"-Wl,-soname,{soname}",
                        "-o", tmp_path / soname], check=True)
    (tmp_path / "bad.cpp").write_text(textwrap.dedent("""
        namespace c10 { void warn_once(); }
        extern "C" int cudaMalloc(void**, unsigned long);
        void use() { c10::warn_once(); void* p; cudaMalloc(&p, 1); }
    """))
    libs = [f"-l:{soname}" for soname in ("libtorch_cpu.so", "libcudart.so.13", "libcuda.so.1", "libfoo.so.1")]
    subprocess.run(["g++", "-shared", "-fPIC", tmp_path / "bad.cpp", "-o", tmp_path / "bad.so", f"-L{tmp_path}",
                    "-Wl,--no-as-needed", *libs], check=True)
    problems = "\n".join(wheel_check.extension_problems(tmp_path / "bad.so"))
    for expected in ("needs libtorch_cpu.so as a shared library", "needs libcudart.so.13 as a shared library",
                     "needs libcuda.so.1 as a shared library", "needs libfoo.so.1, which is not a system",
                     "references the torch symbol _ZN3c109warn_onceEv", "leaves the CUDA symbol cudaMalloc"):
        assert expected in problems


def _wheel(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_a_wheel_carries_its_package_and_one_clean_module(tmp_path):
    module = f"fastppo/_core{sysconfig.get_config_var('EXT_SUFFIX')}"
    good = {"fastppo/__init__.py": "", module: CORE.read_bytes(), "fastppo-0.1.0.dist-info/METADATA": ""}
    assert wheel_check.wheel_problems(_wheel(tmp_path / "fastppo-0.1.0-cp311-cp311-linux_x86_64.whl", good)) == []
    stray = {"fastppo/__init__.py": "", "tests/test_x.py": "", "fastppo.libs/libcudart.so.13": ""}
    problems = wheel_check.wheel_problems(_wheel(tmp_path / "fastppo-0.1.0-py3-none-any.whl", stray))
    assert problems == ["carries tests/test_x.py, outside the package",
                        "carries fastppo.libs/libcudart.so.13, outside the package",
                        "has 0 native modules fastppo/_core.*.so, expected 1"]


def test_a_plugins_copy_of_the_module_loads_beside_fastppos(tmp_path):
    # Two builds of one pybind11 module in a process: their classes must not collide (py::module_local).
    package = tmp_path / "fastppo_cuda99"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copy(CORE, package / CORE.name)
    script = textwrap.dedent("""
        import fastppo, fastppo._core as core
        import fastppo_cuda99._core as plugin
        for m in (core, plugin):
            m.PpoUpdateConfig()
        assert plugin.PpoUpdateConfig is not core.PpoUpdateConfig and plugin.__version__ == fastppo.__version__
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


def test_a_generated_cuda_plugin_project_is_this_release_built_from_this_tree(tmp_path):
    cuda_plugin = _tool("cuda_plugin")
    project = cuda_plugin.write_plugin(12, tmp_path / "plugin")
    meta = tomllib.loads((project / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "fastppo-cuda12"
    assert meta["project"]["version"] == fastppo.__version__
    assert meta["project"]["dependencies"] == [f"fastppo=={fastppo.__version__}"]
    build = meta["tool"]["scikit-build"]
    assert (project / build["cmake"]["source-dir"]).resolve() == ROOT
    assert build["cmake"]["define"]["FASTPPO_PACKAGE"] == "fastppo_cuda12" and (project / "fastppo_cuda12").is_dir()
    assert "cuda-nvcc-12-9" in " ".join(meta["tool"]["cibuildwheel"]["before-all"])
    with pytest.raises(ValueError, match="major must be one of"):
        cuda_plugin.write_plugin(11, tmp_path / "old")


def test_the_cuda_extras_pin_the_plugins_to_this_release():
    from importlib.metadata import requires

    extras = [r for r in requires("fastppo") if "fastppo-cuda" in r]
    for major in _backend.CUDA_PLUGINS:
        assert any(r.startswith(f"fastppo-cuda{major}=={fastppo.__version__}") and f'extra == "cuda{major}"' in r
                   for r in extras), extras
