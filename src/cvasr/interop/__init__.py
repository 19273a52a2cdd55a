"""Moving models between the recipe and other tools: transformers (import-hf, export-hf), ONNX
runtimes (export-onnx), and stock espnet2 (the model classes registered when espnet2 loads)."""
