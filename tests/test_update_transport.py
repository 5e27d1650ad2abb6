"""The gateway serves updates with CoAP block-wise transfer (RFC 7959 Block2), checked by
independent clients: aiocoap (which reassembles the blocks itself) and libcoap's
coap-client-notls; both get the image and the manifest byte for byte."""
from __future__ import annotations

import asyncio
import os
import subprocess

import pytest
from aiocoap import GET, Context, Message
from aiocoap.numbers.codes import Code
from aiocoap.optiontypes import BlockOption

from fieldnode.gateway import GatewayThread
from fieldnode.node.keystore import Keystore
from fieldnode.updates.site import UpdateSite, updates_dir

KID = bytes.fromhex("02f1e15e00010001")


@pytest.fixture
def served(tmp_path):
    keys = tmp_path / "keys.json"
    Keystore(keys, []).save()
    db = tmp_path / "gw.db"
    site = UpdateSite(updates_dir(db))
    image = os.urandom(5000) + b"end"  # not a whole number of blocks
    release = site.add_release(image, "0.2.0", "virtual", "1.20.0")
    site.offer(KID, os.urandom(32), release)
    gw = GatewayThread(Keystore.load(keys), db, ("127.0.0.1", 0)).start()
    yield gw.address, image, site.manifest(KID)
    gw.stop()


def fetch(uri: str, szx: int | None = None) -> tuple[Code, bytes]:
    async def go() -> tuple[Code, bytes]:
        ctx = await Context.create_client_context()
        try:
            msg = Message(code=GET, uri=uri)
            if szx is not None:
                msg.opt.block2 = BlockOption.BlockwiseTuple(0, False, szx)
            response = await ctx.request(msg).response
            return response.code, response.payload
        finally:
            await ctx.shutdown()
    return asyncio.run(go())


@pytest.mark.parametrize("szx", [None, 2, 6])
def test_aiocoap_fetches_the_image_and_manifest_block_wise_and_gets_the_same_bytes(served, szx):
    (host, port), image, manifest = served
    base = f"coap://{host}:{port}/u/{KID.hex()}"
    assert fetch(f"{base}/i", szx) == (Code.CONTENT, image)
    assert fetch(f"{base}/m", szx) == (Code.CONTENT, manifest)


def test_libcoap_fetches_the_image_block_wise_and_gets_the_same_bytes(served, tmp_path):
    (host, port), image, _ = served
    out = tmp_path / "image.bin"
    proc = subprocess.run(["coap-client-notls", "-m", "get", "-b", "64", "-o", str(out),
                           f"coap://{host}:{port}/u/{KID.hex()}/i"], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == image


def test_what_is_not_offered_is_not_found_and_a_block_past_the_end_is_refused(served):
    (host, port), image, _ = served
    assert fetch(f"coap://{host}:{port}/u/{bytes(8).hex()}/i")[0] == Code.NOT_FOUND
    assert fetch(f"coap://{host}:{port}/u/{KID.hex()}/x")[0] == Code.NOT_FOUND

    async def past_end() -> Code:
        ctx = await Context.create_client_context()
        try:
            msg = Message(code=GET, uri=f"coap://{host}:{port}/u/{KID.hex()}/i")
            msg.opt.block2 = BlockOption.BlockwiseTuple(len(image) // 1024 + 1, False, 6)
            return (await ctx.request(msg, handle_blockwise=False).response).code
        finally:
            await ctx.shutdown()
    assert asyncio.run(past_end()) == Code.BAD_OPTION
