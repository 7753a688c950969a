"""The HTTP scoring service: a thin Flask shell over ``detector``.

It lands with the service issue; until then the package only reserves its place, so that the
import-direction rule (``detector`` never imports ``service``) is testable from day one.
"""
