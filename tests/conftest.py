pytest_plugins = [
    "tests.fixtures.database",
    "tests.fixtures.api",
    "tests.fixtures.factories",
    "tests.fixtures.files",
    "tests.fixtures.tiny_model",
    "tests.fakes.openai_server",
    "tests.fixtures.browser",
]
