"""The web portal at /portal: a single page (static/, with front-end libraries from npm in static/vendor,
built by `make portal`) over the same API the SDKs use, authenticated by a session cookie."""
