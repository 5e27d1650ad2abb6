"""Test doubles shared by the tests and the benches; nothing in the product imports them."""
