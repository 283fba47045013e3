from tests.signed_in import SignIn, sign_in  # noqa: F401 (fixture)
