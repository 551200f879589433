"""Which packages the distribution holds (every other setting is in pyproject.toml).

The code lives in src/asyncqueue, so that the clone's root, where platforms run every process
(and which Heroku's buildpack puts on PYTHONPATH), holds nothing Python could import as
`asyncqueue`: every process runs the installed package. sql/ stays at the top of the
repository, where migrations and queries are read and added; it ships inside the package as
`asyncqueue.sql`, so an installed wheel finds it through importlib.resources wherever it runs,
and an editable install maps the same name to the folder. Packages are found, not listed, so a
new subpackage or sql/ folder cannot be left out.
"""

from setuptools import find_namespace_packages, find_packages, setup

# sql/'s folders hold only .sql files, but Python could import them, so setuptools wants them
# named as packages (else it warns and, one day, leaves them out).
SQL_FOLDERS = [f"asyncqueue.sql.{name}" for name in find_namespace_packages(where="sql")]

setup(
    packages=[
        *find_packages(where="src", include=["asyncqueue", "asyncqueue.*"]),
        "asyncqueue.sql",
        *SQL_FOLDERS,
    ],
    package_dir={"": "src", "asyncqueue.sql": "sql"},
    package_data={"asyncqueue.sql": ["*.sql"], **{folder: ["*.sql"] for folder in SQL_FOLDERS}},
)
