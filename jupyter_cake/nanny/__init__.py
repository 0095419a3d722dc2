"""The nanny: the small supervisor that runs next to a remote kernel.

It depends on the standard library and ipykernel (with its own dependencies: pyzmq, jupyter_client)
only, because it is started on machines where nothing of Cake but this folder may be installed. Nothing
here may import from the rest of ``jupyter_cake``.
"""
