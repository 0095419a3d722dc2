"""``python -m jupyter_cake.ide_bridge.kernel``: the kernel proxy's old module path, as kernelspecs written by
earlier versions still launch it. It runs ``ide_bridge.kernel`` (same arguments); importing it does nothing,
so ``jupyter_cake`` never loads the IDE bridge by accident."""

if __name__ == "__main__":
    from ide_bridge.kernel import main

    main()
