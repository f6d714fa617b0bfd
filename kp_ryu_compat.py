"""Lets Ryu 4.34 run on current eventlet (Python 3.10+), loaded by kp_ryu_compat.pth.

eventlet 0.30.2, the last release with ``eventlet.wsgi.ALREADY_HANDLED``, does not import
on Python 3.10+, and ``ryu-manager`` imports that name (``ryu/app/wsgi.py``) before it
loads any application, so no code in ``kp_app`` can run early enough to fix it.  A .pth
file is processed at interpreter start; it installs this finder, which waits until
``eventlet.wsgi`` is imported and then adds the missing marker.  Ryu only hands the marker
back from websocket handlers, which kp does not use; eventlet ignores it elsewhere.
Nothing else is imported at start-up, so other programs in the environment pay nothing.
"""
import importlib.abc
import importlib.util
import sys


class _EventletWsgiFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "eventlet.wsgi":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            if not hasattr(module, "ALREADY_HANDLED"):
                module.ALREADY_HANDLED = object()

        spec.loader.exec_module = exec_and_patch
        return spec


if not any(isinstance(f, _EventletWsgiFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _EventletWsgiFinder())
