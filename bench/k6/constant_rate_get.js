// GET one URL at a constant arrival rate (open loop), for bench/waste_status_reads.py --rate.
// A closed-loop tool (wrk) measures latency at saturation; the goal's p99 is at a given rate.
// k6 keeps the rate with at most CONNECTIONS virtual users (one keep-alive connection each)
// and counts the arrivals it could not start as dropped_iterations.
import http from "k6/http";

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ["p(50)", "p(99)", "max"],
  scenarios: {
    reads: {
      executor: "constant-arrival-rate",
      rate: Number(__ENV.RATE),
      timeUnit: "1s",
      duration: `${__ENV.SECONDS}s`,
      preAllocatedVUs: Number(__ENV.CONNECTIONS),
      maxVUs: Number(__ENV.CONNECTIONS),
    },
  },
};

const params = { headers: { Authorization: __ENV.AUTHORIZATION } };

export default function () {
  http.get(__ENV.URL, params);
}

export function handleSummary(data) {
  return { [__ENV.SUMMARY]: JSON.stringify(data.metrics) };
}
