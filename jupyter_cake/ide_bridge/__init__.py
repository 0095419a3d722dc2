"""Compatibility path for kernelspecs written by earlier versions of Cake.

The IDE bridge is the top-level package ``ide_bridge`` now. Kernelspecs installed before the move run
``python -m jupyter_cake.ide_bridge.kernel``; that module stays so they keep starting (``cake kernel
install`` with the same name rewrites one with the new argv). Nothing else belongs here, and nothing in
``jupyter_cake`` imports ``ide_bridge`` through this package.
"""
