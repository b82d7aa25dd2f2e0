"""The Python canister development kit (the canister side of icws_fast)."""
