"""`orch api`: the HTTP service (issue 12): the orch.event.v1 stream as Server-Sent Events
and JSON pages, and the incidents, behind bearer API tokens. `app` builds the FastAPI
application, `server` runs it under uvicorn, `stream` reads the ledger's event stream (also
for `orch events tail`) and `problems` turns errors into problem+json. Nothing is imported
here: `orch events tail` reads the stream without loading FastAPI."""
