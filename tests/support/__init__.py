"""What the tests share: real local servers, a real gateway process, payloads, waits and the
store's read side. No mocks. One module per job:

- `payloads`: webhook bodies (the shipped samples, with fields overridden) and the corpus
- `config`: the test token, free ports, a minimal valid config and writing it
- `sinks`: the HTTP receiver (scripted answers, Slack's own validation) and a loop thread
- `smtp`: an aiosmtpd mail server with recording and refusing handlers
- `tls`: throwaway certificates and server contexts
- `raw_http`: HTTP/1.1 over raw sockets and a TCP peer that never answers
- `process`: the gateway and its CLI as real child processes (and the forked fast CLI)
- `load`: a threaded load generator
- `waiting`: polling until a condition holds
- `store`: what the store holds, through its own query methods
- `destinations`: destinations built from a real config, with the servers they talk to
- `scrape`: a Prometheus scrape and the sample names it holds
"""
