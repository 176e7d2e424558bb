"""distillery's tests, one package: folders mirror ``src/distillery`` (``tests/datasets`` tests
``distillery.datasets``) and import their shared helpers from ``tests.support``.

Every folder is a package, so a test module's name is unique (``tests.datasets.test_api``) and
no test folder can shadow an installed package (HuggingFace's ``datasets``).
"""
