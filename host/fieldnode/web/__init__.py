"""The fleet in a browser: `fieldnode web`, `fieldnode gateway --http`, the demo's page.

A Starlette app over the gateway's SQLite database (a WAL reader beside the writer, every shard):
    reader    the database as the page needs it: fleet rows, a node's series, events, boots
    series    a reading over a range, reduced server-side to min/max/mean per time bucket
    buckets   how a range is cut, and a series folded into its buckets (from minute rollups)
    feed      what changed since the last look, pushed to every open page (server-sent events)
    access    who may use the page: loopback or an access token, CSRF on POST
    commands  the Commands view's queue, and queuing from the page (--allow-commands)
    app       the routes
    server    uvicorn in a thread, on a socket bound before it starts
The browser side is static/ (plain JavaScript; uPlot for charts, shipped in static/uplot/ from its
npm release by scripts/refresh-uplot). See docs/web.md.
"""
