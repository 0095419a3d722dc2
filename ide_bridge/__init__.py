"""The IDE bridge: Cake sessions for frontends that have no Cake plugin of their own.

A top-level package of the ``jupyter-cake`` distribution, beside ``jupyter_cake`` (DESIGN.md's box): it is
a front door built on the engine, and being outside ``jupyter_cake`` keeps that seam visible. It imports the
engine only (``jupyter_cake.manager``, ``session``, ``targets``, ``store``, ``relay``, ``runner`` and the leaf
helpers), never the backends, the nanny, ``ray`` or the server; and nothing in ``jupyter_cake`` imports it
but ``cake kernel`` (the CLI) and ``jupyter_cake.ide_bridge.kernel``, the entry point that kernelspecs
written by earlier versions (``python -m jupyter_cake.ide_bridge.kernel``) still launch.

- ``kernel``:      a kernelspec's argv. A thin local proxy that makes a remote Cake session answer at the
                   ports of the connection file a frontend wrote (VS Code, PyCharm, JupyterLab, nbclient,
                   jupyter console all launch kernels this way).
- ``kernelspecs``: ``cake kernel install / list / remove``.
- ``lsp``:         a python-lsp-server plugin: "Run cell on <target>" code lenses and code actions.

Nothing here is imported by ``import jupyter_cake``; each module imports its heavy parts on use.
"""
