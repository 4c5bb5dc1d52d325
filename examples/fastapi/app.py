"""A FastAPI app on pyrs: `pip install fastapi && pyrs --app-dir examples/fastapi app:app`."""

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request


@asynccontextmanager
async def lifespan(app):
    yield {"started": "at startup, by lifespan"}


app = FastAPI(lifespan=lifespan)


@app.get("/")
async def index():
    return {"hello": "FastAPI on pyrs"}


@app.get("/items/{item_id}")
async def item(item_id: int, q: str = ""):
    return {"id": item_id, "q": q}


@app.get("/slow")
async def slow(request: Request):
    await asyncio.sleep(0.1)  # thousands of these can wait at once
    return {"waited": 0.1, "state": request.state.started}
