from setuptools import find_packages, setup

setup(
    name="nnqc",
    version="0.1.0",
    description="nnQC: self-configuring segmentation quality control (QCResUNet) on nnU-Net v2",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["nnqc", "nnqc.*", "nnqc_trainers", "nnqc_trainers.*",
                                    "dataset_conversion", "dataset_conversion.*"]),
    # torch is deliberately unpinned: a user with a CUDA build keeps it.
    install_requires=[
        "torch>=2.1",
        "nnunetv2==2.8.1",
        "batchgenerators>=0.25",
        "batchgeneratorsv2>=0.3",
        "acvl-utils>=0.2",
        "blosc2",
        "nibabel",
        "numpy",
        "scipy",
        "SimpleITK>=2.2",
        "matplotlib",
        "tqdm",
        "pandas",
    ],
    extras_require={
        # independent reference implementations used only by the tests
        "test": ["pytest", "pytest-xdist", "filelock", "ruff", "surface-distance==0.1", "monai==1.6.1", "hypothesis"],
    },
    entry_points={
        "console_scripts": [
            "nnQC_convert = nnqc.run.convert:convert_entry",
            "nnQC_plan_and_preprocess = nnqc.run.plan_and_preprocess:plan_and_preprocess_entry",
            "nnQC_train = nnqc.run.train:train_entry",
            "nnQC_predict = nnqc.run.predict:predict_entry",
            "nnQC_evaluate = nnqc.run.evaluate:evaluate_entry",
            "nnQC_make_candidates = nnqc.run.make_candidates:make_candidates_entry",
            "nnQC_export_model_to_zip = nnqc.run.export_model:export_model_to_zip_entry",
            "nnQC_install_pretrained_model_from_zip = nnqc.run.install_model:install_model_from_zip_entry",
        ],
    },
)
