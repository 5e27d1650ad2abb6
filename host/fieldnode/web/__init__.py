"""The fleet in a browser: `fieldnode web`, `fieldnode gateway --http`, the demo's page.

A Starlette app over the gateway's store, read beside the gateways writing it: a SQLite database
(a WAL reader, every shard) or a PostgreSQL store:
    reader    the store as the page needs it (fleet rows, latest samples, rejections, the feed's
              marks): one interface, each question written once; open_reader picks the engine
    sqlite_reader, pg_reader   the engines' connections (and the little each does its own way)
    dialect   what differs in the two engines' SQL: placeholders, sample tables, integer buckets
    series    a reading over a range, reduced server-side to min/max/mean per time bucket
    buckets   how a range is cut, and a series folded into its buckets (SQLite: from minute rollups)
    feed      what changed since the last look, pushed to every open page (server-sent events)
    access    who may use the page: loopback or an access token, CSRF on POST
    commands  the Commands view's queue, and queuing from the page (--allow-commands)
    app       the routes
    server    uvicorn in a thread, on a socket bound before it starts
The browser side is static/ (plain JavaScript; uPlot for charts, shipped in static/uplot/ from its
npm release by scripts/refresh-uplot). See docs/web.md.
"""
