"""Breaks perf samples (inferno folded stacks) into request-path stages.
First matching rule wins; rules are checked in order, on the whole stack."""
import re, sys, collections
RULES = [
 ("eval: guest code (JIT)", r"\[perf-\d+\.map\]$"),
 ("eval: instantiate (InstancePre, init exports)", r"(InstancePre.*instantiate|Instance::new|instantiate_pre|wapc::WapcModule::instantiate|component::.*instantiate)"),
 ("eval: host calls from the guest", r"(host_calls|__guest_request|__guest_response|guest_log|wasi)"),
 ("eval: Store teardown (drop, pool reset)", r"(drop_in_place<wasmtime::runtime::store|StoreOpaque|deallocate|pagemap|PAGEMAP|memset|madvise|reset_with_pagemap|decommit)"),
 ("eval: guest payload (serialise request)", r"validate_payload"),
 ("eval: parse the guest's answer", r"parse_validation_response"),
 ("eval: wasm call entry (guest_call)", r"(Func::call|guest_call|Running::call)"),
 ("eval: waiting for a job / waking (futex, switch)", r"^portcullis-eval.*(futex|finish_task_switch|schedule|mpsc|recv)"),
 ("eval: other", r"^portcullis-eval"),
 ("http: TLS record encryption and decryption (rustls, aws-lc)", r"^(tokio-rt-worker|portcullis-io).*(aws_lc|aws-lc|ring::|aes_hw|aes_gcm|gcm_|sha256|encrypt|decrypt|record_layer)"),
 ("http: parse AdmissionReview (serde_json)", r"^(tokio-rt-worker|portcullis-io).*(json_object|from_trait|admission_request)"),
 ("http: drop request Value", r"^(tokio-rt-worker|portcullis-io).*drop_in_place<serde_json::value::Value>"),
 ("http: response (build, serialise)", r"^(tokio-rt-worker|portcullis-io).*(json_response|build_admission_response|post_process|cap_response|AdmissionReviewResponse)"),
 ("http: metrics", r"^(tokio-rt-worker|portcullis-io).*(record_evaluation|metrics::|prometheus)"),
 ("http: tracing spans", r"^(tokio-rt-worker|portcullis-io).*(tracing_subscriber|tracing_core|tracing::span|Span::)"),
 ("http: scheduler (acquire, hand-off)", r"^(tokio-rt-worker|portcullis-io).*(scheduler::Scheduler|Scheduler::run|Scheduler::acquire|pool::EvaluationPool::submit|oneshot)"),
 ("http: socket write (syscalls)", r"^(tokio-rt-worker|portcullis-io).*(sys_sendto|sys_write|writev|__send|tcp_sendmsg)"),
 ("http: socket read (syscalls)", r"^(tokio-rt-worker|portcullis-io).*(sys_recvfrom|sys_read|tcp_recvmsg)"),
 ("http: hyper h1 (headers, body)", r"^(tokio-rt-worker|portcullis-io).*hyper::proto"),
 ("http: body read (limits)", r"^(tokio-rt-worker|portcullis-io).*(read_limited|LimitedBody|BodyBudget)"),
 ("tokio: park, epoll, wake-ups (futex, switch)", r"^(tokio-rt-worker|portcullis-io).*(park|epoll|futex|finish_task_switch|schedule|Context::run|unpark|wake)"),
 ("tokio: other", r"^(tokio-rt-worker|portcullis-io)"),
 ("other threads", r""),
]
def main(path):
    tot=0; c=collections.Counter()
    for line in open(path):
        stack,n=line.rstrip().rsplit(' ',1); n=int(n); tot+=n
        for name,rx in RULES:
            if re.search(rx,stack): c[name]+=n; break
    print("| stage | share of server CPU samples |")
    print("|---|---|")
    for name,_ in RULES:
        if c[name]: print(f"| {name} | {100*c[name]/tot:.1f}% |")
    print(f"\n{tot} samples")
main(sys.argv[1])
