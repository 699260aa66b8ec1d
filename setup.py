"""Package build for hyperkd, driven by `settings.ini` (the nbdev 2 layout)."""
from configparser import ConfigParser
from pathlib import Path

import setuptools

here = Path(__file__).parent
config = ConfigParser(delimiters=["="])
config.read(here / "settings.ini", encoding="utf-8")
cfg = config["DEFAULT"]

for key in ("lib_name", "user", "description", "keywords", "author", "author_email", "copyright", "version", "min_python"):
    assert key in cfg, f"settings.ini is missing `{key}`"

licenses = {"apache2": ("Apache Software License 2.0", "OSI Approved :: Apache Software License")}
statuses = ["1 - Planning", "2 - Pre-Alpha", "3 - Alpha", "4 - Beta", "5 - Production/Stable", "6 - Mature", "7 - Inactive"]
py_versions = ["3.10", "3.11", "3.12", "3.13"]
lic = licenses[cfg["license"]]

requirements = cfg.get("requirements", "").split()
samples = cfg.get("samples_requirements", "").split()
dev = cfg.get("dev_requirements", "").split()
terratorch = cfg.get("terratorch_requirements", "").split()  # heavy: an optional extra, never core
# settings.ini lists requirements space-separated; a spec like `nbdev>=2.4,<3` must not contain spaces.
min_python = cfg["min_python"]

setuptools.setup(
    name=cfg["lib_name"],
    license=lic[0],
    classifiers=[
        "Development Status :: " + statuses[int(cfg["status"])],
        "Intended Audience :: " + cfg["audience"].title(),
        "License :: " + lic[1],
        "Natural Language :: " + cfg["language"].title(),
        "Topic :: Scientific/Engineering :: GIS",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ]
    + ["Programming Language :: Python :: " + v for v in py_versions[py_versions.index(min_python):]],
    url=cfg["git_url"],
    packages=setuptools.find_packages(include=["hyperkd", "hyperkd.*"]),
    include_package_data=True,
    package_data={"hyperkd": ["resources/*.csv", "resources/*.txt", "resources/*.md", "resources/*.pt", "resources/*.json"]},
    install_requires=requirements,
    extras_require={"samples": samples, "dev": dev, "terratorch": terratorch},
    dependency_links=cfg.get("dep_links", "").split(),
    python_requires=">=" + min_python,
    long_description=(here / "README.md").read_text(encoding="utf-8") if (here / "README.md").exists() else cfg["description"],
    long_description_content_type="text/markdown",
    zip_safe=False,
    entry_points={
        "console_scripts": cfg.get("console_scripts", "").split(),
        "nbdev": [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"],
    },
    author=cfg["author"],
    author_email=cfg["author_email"],
    description=cfg["description"],
    keywords=cfg["keywords"],
    version=cfg["version"],
)
