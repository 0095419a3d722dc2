"""The IDE bridge: Cake sessions for frontends that have no Cake plugin of their own.

DESIGN.md draws this box as a top-level ``ide_bridge/``; it lives at ``jupyter_cake.ide_bridge`` so the
one ``jupyter-cake`` distribution never installs a generic top-level package name into site-packages.

- ``kernel``:      a kernelspec's argv. A thin local proxy that makes a remote Cake session answer at the
                   ports of the connection file a frontend wrote (VS Code, PyCharm, JupyterLab, nbclient,
                   jupyter console all launch kernels this way).
- ``kernelspecs``: ``cake kernel install / list / remove``.
- ``lsp``:         a python-lsp-server plugin: "Run cell on <target>" code lenses and code actions.

Nothing here is imported by ``import jupyter_cake``; each module imports its heavy parts on use.
"""
