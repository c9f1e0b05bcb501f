"""What a deployment needs: the manifest schema, the onnxruntime session wrapper, serving.

Never imports ``smp_export`` or ``smp_train``.
"""
