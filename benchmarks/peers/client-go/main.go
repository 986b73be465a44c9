// Benchmark peer driving k8s.io/client-go tools/leaderelection with a
// resourcelock.LeaseLock, following client-go's examples/leader-election:
// LeaderElectionConfig{LeaseDuration, RenewDeadline, RetryPeriod,
// ReleaseOnCancel: true}, run with leaderelection.RunOrDie. SIGTERM/SIGINT
// cancel the context (which releases the lease). RunOrDie returns when
// leadership is lost; the peer then re-enters it (a fresh elector) until
// SIGTERM, as an operator restarted by its supervisor would.
//
// Protocol: JSON lines on stdout ({"event": ..., "t": CLOCK_MONOTONIC s}),
// diagnostics (klog and ours) on stderr. See README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
)

var outMu sync.Mutex

func monotonic() float64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err)
	}
	return float64(ts.Sec) + float64(ts.Nsec)*1e-9
}

// emit writes one JSON line to stdout (os.Stdout is unbuffered: one write(2)).
func emit(event string) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Fprintf(os.Stdout, "{\"event\":%q,\"t\":%.9f}\n", event, monotonic())
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[client-go-peer t=%.3f] %s\n", monotonic(), fmt.Sprintf(format, args...))
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func main() {
	var kubeconfig, namespace, lease, identity string
	var leaseDuration, renewDeadline, retryPeriod float64
	var leases int
	fs := flag.NewFlagSet("peer", flag.ExitOnError)
	fs.IntVar(&leases, "leases", 1, "K > 1: K LeaderElectors in this process, on Leases NAME-0 .. NAME-(K-1), one clientset")
	fs.StringVar(&kubeconfig, "kubeconfig", "", "path to the kubeconfig file")
	fs.StringVar(&namespace, "namespace", "", "namespace of the Lease")
	fs.StringVar(&lease, "lease", "", "name of the Lease")
	fs.StringVar(&identity, "identity", "", "holder identity")
	fs.Float64Var(&leaseDuration, "lease-duration", 15, "LeaseDuration, seconds")
	fs.Float64Var(&renewDeadline, "renew-deadline", 10, "RenewDeadline, seconds")
	fs.Float64Var(&retryPeriod, "retry-period", 2, "RetryPeriod, seconds")
	klogFlags := flag.NewFlagSet("klog", flag.ExitOnError)
	klog.InitFlags(klogFlags) // klog logs to stderr by default
	_ = fs.Parse(os.Args[1:])
	if kubeconfig == "" || namespace == "" || lease == "" || identity == "" {
		fmt.Fprintln(os.Stderr, "usage: peer --kubeconfig PATH --namespace NS --lease NAME --identity ID "+
			"--lease-duration S --renew-deadline S --retry-period S")
		os.Exit(2)
	}

	// SIGTERM/SIGINT cancel ctx; with ReleaseOnCancel the elector then releases the lease.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		logf("building client config from %s failed: %v", kubeconfig, err)
		emit("exit")
		os.Exit(1)
	}
	if leases > 1 {
		// client-go's default client-side rate limit (5 QPS, burst 10) would throttle K
		// renewals every RetryPeriod; an operator with many Leases lifts it, as here.
		config.QPS = -1
	}
	client, err := clientset.NewForConfig(config)
	if err != nil {
		logf("creating clientset failed: %v", err)
		emit("exit")
		os.Exit(1)
	}

	emit("ready")
	if leases > 1 {
		// The scale mode: K electors share one clientset (one HTTP/2 connection, as an
		// operator sharding work over many Leases would), each on its own Lease.
		var wg sync.WaitGroup
		for i := 0; i < leases; i++ {
			wg.Add(1)
			go func(name string) {
				defer wg.Done()
				for round := 1; ctx.Err() == nil; round++ {
					runOnce(ctx, client, round, namespace, name, identity,
						seconds(leaseDuration), seconds(renewDeadline), seconds(retryPeriod))
				}
			}(fmt.Sprintf("%s-%d", lease, i))
		}
		wg.Wait()
	} else {
		for round := 1; ctx.Err() == nil; round++ {
			runOnce(ctx, client, round, namespace, lease, identity,
				seconds(leaseDuration), seconds(renewDeadline), seconds(retryPeriod))
		}
	}
	emit("exit")
	klog.Flush()
	os.Exit(0)
}

// runOnce is one leaderelection.RunOrDie: it returns when ctx is cancelled
// (lease released first) or when this process stopped holding the lease.
func runOnce(ctx context.Context, client *clientset.Clientset, round int, namespace, lease, identity string,
	leaseDuration, renewDeadline, retryPeriod time.Duration) {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: lease, Namespace: namespace},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}
	// OnStoppedLeading is called whenever RunOrDie returns, even if this
	// process never led (as client-go's example notes): "stopped" is printed
	// only after "started". The mutex keeps the pair ordered, since
	// OnStartedLeading runs in its own goroutine.
	var mu sync.Mutex
	started, over := false, false
	leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock:            lock,
		ReleaseOnCancel: true,
		LeaseDuration:   leaseDuration,
		RenewDeadline:   renewDeadline,
		RetryPeriod:     retryPeriod,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(workCtx context.Context) {
				mu.Lock()
				if !over {
					started = true
					emit("started")
				}
				mu.Unlock()
				// The guarded work: runs until the elector cancels workCtx.
				<-workCtx.Done()
				emit("work_done")
				logf("round %d: OnStartedLeading context done (guarded work ends)", round)
			},
			OnStoppedLeading: func() {
				mu.Lock()
				defer mu.Unlock()
				over = true
				if started {
					emit("stopped")
				}
			},
			OnNewLeader: func(id string) {
				logf("round %d: new leader observed: %q", round, id)
			},
		},
	})
	if ctx.Err() == nil {
		logf("round %d: RunOrDie returned (leadership lost); re-entering", round)
	}
}
