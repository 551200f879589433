"""Which packages the distribution holds (every other setting is in pyproject.toml).

sql/ stays at the top of the repository, where migrations and queries are read and added; it
ships inside the package as `asyncqueue.sql`, so an installed wheel finds it through
importlib.resources wherever it runs, and an editable install maps the same name to the folder.
Packages are found, not listed, so a new subpackage cannot be left out of the wheel.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["asyncqueue", "asyncqueue.*"]), "asyncqueue.sql"],
    package_dir={"asyncqueue.sql": "sql"},
    package_data={"asyncqueue.sql": ["migrations/*.sql", "queries/*.sql"]},
)
