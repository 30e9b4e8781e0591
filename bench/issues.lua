-- wrk script: POSTs GitHub's `issues` example for FUT_REPOS repositories in turn, each
-- repository's body and signature precomputed (FUT_DIR/body-N.json, FUT_DIR/sig-N), each
-- request with a delivery id of its own (run id, thread number, counter), so every
-- request is new work spread over every repository's ordering domain.
local dir = os.getenv("FUT_DIR")
local repos = tonumber(os.getenv("FUT_REPOS") or "20")
local run_id = os.getenv("FUT_RUN") or tostring(os.time())

local bodies, signatures = {}, {}
for i = 0, repos - 1 do
  local f = assert(io.open(dir .. "/body-" .. i .. ".json", "rb"))
  bodies[i] = f:read("*a")
  f:close()
  local s = assert(io.open(dir .. "/sig-" .. i, "rb"))
  signatures[i] = s:read("*l")
  s:close()
end

wrk.method = "POST"

local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
end

local counter = 0
function request()
  counter = counter + 1
  local repo = (counter + tid) % repos
  local headers = {
    ["Content-Type"] = "application/json",
    ["User-Agent"] = "GitHub-Hookshot/bench",
    ["X-GitHub-Event"] = "issues",
    ["X-GitHub-Hook-ID"] = "1",
    ["X-Hub-Signature-256"] = signatures[repo],
    ["X-GitHub-Delivery"] = run_id .. "-" .. tid .. "-" .. counter,
  }
  return wrk.format("POST", nil, headers, bodies[repo])
end
