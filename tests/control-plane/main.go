// Command control-plane runs a throw-away Kubernetes control plane for Portcullis
// integration tests: an embedded etcd and a real kube-apiserver in this process,
// and kube-controller-manager in a child process re-executed from this same
// binary (see docs/control-plane.md for why it is a child and not a goroutine).
//
// Everything listens on 127.0.0.1 only. No kubelet, no scheduler, no cloud.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

type cpOptions struct {
	stateDir          string
	port              int
	auditLog          string
	exitWithParent    bool
	logFile           string
	noControllers     bool
	keepData          bool
	removeStateOnExit bool
	serviceRoutes     string
	apiserverArgs     stringList
	kcmArgs           stringList
}

// origStderr stays connected to the terminal / caller after fd 2 is redirected
// to the log file, so fatal start-up errors are still visible.
var origStderr = os.Stderr

func main() {
	if len(os.Args) > 1 && os.Args[1] == kcmSubcommand {
		os.Exit(runControllerManager(os.Args[2:]))
	}

	var o cpOptions
	fs := flag.NewFlagSet("control-plane", flag.ExitOnError)
	fs.StringVar(&o.stateDir, "state-dir", "target/control-plane", "directory for certificates, kubeconfig, etcd data, logs, pid and ready files")
	fs.IntVar(&o.port, "port", 0, "kube-apiserver secure port on 127.0.0.1 (0 = pick a free port)")
	fs.StringVar(&o.auditLog, "audit-log", "", "write a Metadata-level audit log of every request (minus RequestReceived stage) to this file")
	fs.BoolVar(&o.exitWithParent, "exit-with-parent", false, "shut down when the parent process exits (polls getppid)")
	fs.StringVar(&o.logFile, "log-file", "", "log file (default STATE_DIR/control-plane.log; '-' keeps stderr)")
	fs.BoolVar(&o.noControllers, "no-controller-manager", false, "do not run kube-controller-manager")
	fs.BoolVar(&o.keepData, "keep-data", false, "keep the etcd data of a previous run (default: start from an empty cluster)")
	fs.BoolVar(&o.removeStateOnExit, "remove-state-on-exit", false, "delete the state dir when stopping")
	fs.StringVar(&o.serviceRoutes, "service-routes", "", "file mapping NAMESPACE/SERVICE:PORT to a loopback HOST:PORT for webhooks and aggregated APIs (default STATE_DIR/service-routes)")
	fs.Var(&o.apiserverArgs, "apiserver-arg", "extra kube-apiserver flag, e.g. --apiserver-arg=--feature-gates=Foo=true (repeatable)")
	fs.Var(&o.kcmArgs, "controller-manager-arg", "extra kube-controller-manager flag (repeatable)")
	_ = fs.Parse(os.Args[1:])

	if err := run(&o); err != nil {
		fmt.Fprintf(origStderr, "control-plane: %v\n", err)
		fmt.Fprintf(os.Stderr, "control-plane: FATAL: %v\n", err)
		os.Exit(1)
	}
}

func run(o *cpOptions) error {
	start := time.Now()
	dir, err := filepath.Abs(o.stateDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	pidFile := filepath.Join(dir, "pid")
	readyFile := filepath.Join(dir, "ready")
	if b, err := os.ReadFile(pidFile); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid != os.Getpid() && syscall.Kill(pid, 0) == nil {
			if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(cmdline), "control-plane") {
				return fmt.Errorf("a control plane (pid %d) already runs with state dir %s; stop it first", pid, dir)
			}
		}
	}
	_ = os.Remove(readyFile)

	logPath := o.logFile
	if logPath == "" {
		logPath = filepath.Join(dir, "control-plane.log")
	}
	if logPath != "-" {
		if err := redirectOutput(logPath); err != nil {
			return err
		}
	}
	logf("starting, state dir %s, pid %d", dir, os.Getpid())

	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	becameReady := false
	defer func() {
		_ = os.Remove(readyFile)
		_ = os.Remove(pidFile)
		// Kept after a failed start, so the caller can read the logs.
		if o.removeStateOnExit && becameReady {
			_ = os.RemoveAll(dir)
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopReason := make(chan string, 4)
	sigCh := make(chan os.Signal, 2)
	signal.Notify(sigCh, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() {
		s := <-sigCh
		stopReason <- "signal " + s.String()
		cancel()
	}()
	if o.exitWithParent {
		go watchParent(ctx, func() { stopReason <- "parent exited"; cancel() })
	}

	pki, err := ensurePKI(dir)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}

	// The apiserver listener is created here, so --port 0 is race free.
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(o.port)))
	if err != nil {
		return fmt.Errorf("listen on 127.0.0.1:%d: %w", o.port, err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	serverURL := fmt.Sprintf("https://127.0.0.1:%d", port)

	adminKubeconfig := filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(adminKubeconfig, serverURL, pki.caPEM, pki.adminCert, pki.adminKey, "admin"); err != nil {
		return err
	}
	kcmKubeconfig := filepath.Join(dir, "controller-manager.kubeconfig")
	if err := writeKubeconfig(kcmKubeconfig, serverURL, pki.caPEM, pki.kcmCert, pki.kcmKey, "system:kube-controller-manager"); err != nil {
		return err
	}

	// etcd
	etcdDir := filepath.Join(dir, "etcd")
	if !o.keepData {
		if err := os.RemoveAll(etcdDir); err != nil {
			return err
		}
	}
	etcd, etcdURL, err := startEtcd(etcdDir, filepath.Join(dir, "etcd.log"))
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	etcdClosed := false
	closeEtcd := func() {
		if !etcdClosed {
			etcdClosed = true
			etcd.Close()
			logf("etcd stopped")
		}
	}
	defer closeEtcd()
	logf("etcd ready at %s after %v", etcdURL, time.Since(start).Round(time.Millisecond))

	// kube-apiserver
	apiArgs := apiserverFlags(dir, pki, etcdURL, port, o.auditLog)
	apiArgs = append(apiArgs, o.apiserverArgs...)
	apiDone := make(chan error, 1)
	resolver := routeResolver{file: o.serviceRoutes, kubernetes: &url.URL{Scheme: "https", Host: ln.Addr().String()}}
	if resolver.file == "" {
		resolver.file = filepath.Join(dir, "service-routes")
		if !o.keepData {
			_ = os.Remove(resolver.file) // routes of a previous run point at dead servers
		}
	}
	go func() { apiDone <- runAPIServer(ctx, ln, apiArgs, resolver) }()

	var kcm *childProcess
	stopAll := func() {
		cancel()
		// Hard deadline: never hang a test run on a slow shutdown.
		go func() {
			time.Sleep(30 * time.Second)
			logf("shutdown took more than 30s, exiting hard")
			_ = os.Remove(readyFile)
			_ = os.Remove(pidFile)
			os.Exit(2)
		}()
		if kcm != nil {
			kcm.stop()
		}
	}

	if err := waitReady(ctx, serverURL, pki, apiDone); err != nil {
		stopAll()
		closeEtcd()
		return err
	}
	logf("kube-apiserver ready at %s after %v", serverURL, time.Since(start).Round(time.Millisecond))

	if !o.noControllers {
		exe, err := os.Executable()
		if err != nil {
			stopAll()
			return err
		}
		args := append([]string{kcmSubcommand}, kcmFlags(dir, pki, kcmKubeconfig)...)
		args = append(args, o.kcmArgs...)
		kcm = startChild(exe, args, filepath.Join(dir, "kube-controller-manager.log"))
		if err := waitControllers(ctx, adminKubeconfig, apiDone); err != nil {
			stopAll()
			<-apiDone
			closeEtcd()
			return err
		}
		logf("kube-controller-manager running after %v", time.Since(start).Round(time.Millisecond))
	}

	if err := os.WriteFile(readyFile, []byte(serverURL+"\n"), 0o644); err != nil {
		stopAll()
		return err
	}
	becameReady = true
	logf("READY %s (kubeconfig %s) after %v", serverURL, adminKubeconfig, time.Since(start).Round(time.Millisecond))

	var apiErr error
	select {
	case <-ctx.Done():
		logf("stopping: %s", drain(stopReason))
		stopAll()
		apiErr = <-apiDone
	case apiErr = <-apiDone:
		logf("kube-apiserver exited: %v", apiErr)
		stopAll()
		if apiErr == nil {
			apiErr = errors.New("kube-apiserver exited unexpectedly")
		}
	}
	closeEtcd()
	if ctx.Err() != nil && apiErr != nil {
		logf("kube-apiserver returned after shutdown: %v", apiErr)
		apiErr = nil
	}
	logf("stopped")
	return apiErr
}

func drain(ch chan string) string {
	select {
	case s := <-ch:
		return s
	default:
		return "context cancelled"
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s control-plane: %s\n", time.Now().UTC().Format("2006-01-02T15:04:05.000Z"), fmt.Sprintf(format, args...))
}

// redirectOutput points fd 1 and 2 at the log file, so klog, etcd's zap logger
// (for what goes to stderr) and Go panics all end up there.
func redirectOutput(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	saved, err := syscall.Dup(2)
	if err != nil {
		return err
	}
	origStderr = os.NewFile(uintptr(saved), "/dev/stderr")
	if err := syscall.Dup3(int(f.Fd()), 1, 0); err != nil {
		return err
	}
	if err := syscall.Dup3(int(f.Fd()), 2, 0); err != nil {
		return err
	}
	return nil
}

// watchParent calls stop once the parent process is gone. getppid polling is
// used instead of PR_SET_PDEATHSIG because the death signal fires when the
// *thread* that forked us exits; a Rust test spawns us from a test thread that
// ends long before the test binary does.
func watchParent(ctx context.Context, stop func()) {
	ppid := os.Getppid()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		if ppid == 1 || os.Getppid() != ppid {
			stop()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startEtcd(dataDir, logFile string) (*embed.Etcd, string, error) {
	cport, err := freePort()
	if err != nil {
		return nil, "", err
	}
	pport, err := freePort()
	if err != nil {
		return nil, "", err
	}
	curl, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", cport))
	purl, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", pport))
	cfg := embed.NewConfig()
	cfg.Name = "portcullis"
	cfg.Dir = dataDir
	cfg.ListenClientUrls = []url.URL{*curl}
	cfg.AdvertiseClientUrls = []url.URL{*curl}
	cfg.ListenPeerUrls = []url.URL{*purl}
	cfg.AdvertisePeerUrls = []url.URL{*purl}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.Logger = "zap"
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{logFile}
	// Test cluster: durability across power loss is irrelevant, latency is not.
	cfg.UnsafeNoFsync = true
	cfg.QuotaBackendBytes = 2 << 30
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, "", err
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, "", errors.New("etcd did not become ready in 60s")
	}
	return e, curl.String(), nil
}

// childProcess supervises kube-controller-manager: restarted if it dies
// (it exits by design on some start-up races), stopped with SIGTERM then SIGKILL.
type childProcess struct {
	mu      sync.Mutex
	cmd     *exec.Cmd
	stopped bool
	done    chan struct{}
}

func startChild(exe string, args []string, logPath string) *childProcess {
	c := &childProcess{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		backoff := time.Second
		for {
			c.mu.Lock()
			if c.stopped {
				c.mu.Unlock()
				return
			}
			lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				c.mu.Unlock()
				logf("kube-controller-manager log: %v", err)
				return
			}
			cmd := exec.Command(exe, args...)
			cmd.Stdout, cmd.Stderr = lf, lf
			cmd.Env = os.Environ()
			err = cmd.Start()
			c.cmd = cmd
			c.mu.Unlock()
			if err != nil {
				lf.Close()
				logf("start kube-controller-manager: %v", err)
				return
			}
			logf("kube-controller-manager started, pid %d", cmd.Process.Pid)
			err = cmd.Wait()
			lf.Close()
			c.mu.Lock()
			stopped := c.stopped
			c.mu.Unlock()
			if stopped {
				return
			}
			logf("kube-controller-manager exited (%v); restarting in %v (see kube-controller-manager.log)", err, backoff)
			time.Sleep(backoff)
			backoff = min(2*backoff, 16*time.Second)
		}
	}()
	return c
}

func (c *childProcess) stop() {
	c.mu.Lock()
	c.stopped = true
	cmd := c.cmd
	c.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		if cmd != nil && cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
		<-c.done
	}
	logf("kube-controller-manager stopped")
}
