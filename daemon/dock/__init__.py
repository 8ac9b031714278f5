"""The dock daemon: takes devices' evidence in over HTTPS, verifies and archives it."""
