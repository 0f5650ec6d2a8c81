"""Typed keys of the aiohttp application state."""

from aiohttp import web

from eventferry.dataplane.dataplane import DataPlane

DATAPLANE_KEY = web.AppKey("dataplane", DataPlane)
