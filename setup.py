"""Build glue that setup.cfg cannot express: the C fast path and the .pth hook.

Everything declarative (metadata, packages, console scripts) is in setup.cfg.
"""
import glob
import os

from setuptools import Extension, setup
from setuptools.command.build_py import build_py
from setuptools.command.develop import develop

PTH = "kp_ryu_compat.pth"


class BuildPyWithPth(build_py):
    """Ship kp_ryu_compat.pth at the root of site-packages (a wheel or plain install)."""

    def run(self):
        super().run()
        self.copy_file(PTH, os.path.join(self.build_lib, PTH))


class DevelopWithPth(develop):
    """The same for an editable install, which never runs build_py.

    An editable install only puts the project root on sys.path, and kp_switch and kp_lab
    live under switch/ and topologies/ (package_dir), so those go on the path too.
    """

    def run(self):
        super().run()
        self.copy_file(PTH, os.path.join(self.install_dir, PTH))
        with open(os.path.join(self.install_dir, "kp_src_dirs.pth"), "w") as pth:
            pth.write(os.path.abspath("switch") + "\n" + os.path.abspath("topologies") + "\n")


fastpath = Extension(
    "kp_switch._fastpath",
    sources=sorted(glob.glob("switch/csrc/*.c")),
    include_dirs=["switch/csrc"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11"],
)

# The new-connection table's fill (kp_app/maglev.py is its twin).
maglev = Extension(
    "kp_app._maglev",
    sources=["kp_app/csrc/maglev.c"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11"],
)

setup(
    ext_modules=([fastpath] if glob.glob("switch/csrc/*.c") else []) +
                ([maglev] if os.path.exists("kp_app/csrc/maglev.c") else []),
    cmdclass={"build_py": BuildPyWithPth, "develop": DevelopWithPth},
)
