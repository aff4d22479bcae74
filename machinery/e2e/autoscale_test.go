package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The autoscale step's load: a ramp through Traefik that starts at
// rampStart requests/s and adds rampStep every rampEvery (a metrics window
// and an autoscaler sync) until the autoscaler scales out, at most rampMax;
// the whole step, with the scale-in, within autoscaleMaxTime.
const (
	rampStart        = 100
	rampStep         = 100
	rampMax          = 600
	rampEvery        = 20 * time.Second
	autoscaleMaxTime = 6 * time.Minute
	// The shipped scale-in window is 5 min; the walk shortens it to one
	// sync of the autoscaler, once it has re-applied the manifests.
	scaleDownWindow = 15
)

// autoscale takes the pods over the autoscaler's CPU target with a load
// ramp through Traefik, waits until the added pods serve, re-applies the
// manifests while scaled out, then stops the load and waits until the
// autoscaler is back at minReplicas, all under the two streams of a
// rollout, which must not lose a request.
func (w *walk) autoscale(url, tag string) {
	w.t.Helper()
	if w.ingress.url == "" {
		w.t.Logf("autoscale: SKIPPED: INGRESS_URL is unset; the load goes through the cluster's ingress")
		return
	}
	if out, err := w.kubectlOut("get", "--raw", "/apis/metrics.k8s.io/v1beta1"); err != nil {
		if os.Getenv("KUBECONFIG") == "" { // the built-in cluster runs metrics-server: never skip there
			w.t.Fatalf("autoscale: the built-in cluster serves no metrics API: %s", lastLine([]byte(out)))
		}
		w.t.Logf("autoscale: SKIPPED: the cluster serves no metrics API (%s): install metrics-server, as k3s ships it", lastLine([]byte(out)))
		return
	}
	w.waitScale("kubectl top pods and the autoscaler see both pods' CPU", 2*time.Minute, func(s scaleState) bool {
		return s.utilization >= 0 && w.top() != ""
	})
	w.t.Logf("kubectl top pods:\n%s", indent(w.top()))

	var (
		out, in      time.Duration // to scale out, and back in, in whole seconds
		from, peak   int           // replicas before, and when scaled out
		rate         int           // requests/s, the ramp's and the streams', when the autoscaler scaled out
		reapplied    int           // the fewest replicas the Deployment had during the re-apply
		rampSent     int64
		rampFailures []string
	)
	streamRate := 0 // the streams' requests/s, on top of the ramp's
	for _, s := range w.streams(url) {
		streamRate += s.rate
	}
	results := w.underLoad(url, autoscaleMaxTime, func() {
		from = w.scale().replicas
		start := time.Now()
		ctx, stopRamp := context.WithCancel(w.ctx)
		defer stopRamp()
		r := w.startRamp(ctx, rampStart)
		for next := start.Add(rampEvery); ; time.Sleep(time.Second) {
			s := w.scale()
			if s.replicas > from && rate == 0 {
				rate = int(r.rate.Load()) + streamRate
				w.t.Logf("autoscale: the autoscaler asks for %d pods after %s at %d requests/s (the ramp's %d, the streams' %d)",
					s.replicas, since(start), rate, r.rate.Load(), streamRate)
			}
			// Scaled out, every pod ready, and back within the target:
			// the autoscaler adds no more.
			if rate > 0 && s.ready == s.replicas && s.utilization >= 0 && s.utilization <= withinTarget {
				out, peak = time.Since(start).Round(time.Second), s.replicas
				break
			}
			if rate == 0 && time.Now().After(next) && r.rate.Load() < rampMax {
				next = next.Add(rampEvery)
				w.t.Logf("autoscale: %s at %d requests/s, %d%% of the CPU request; now %d/s", since(start), r.rate.Load(), s.utilization, r.rate.Add(rampStep))
			}
			if time.Since(start) > autoscaleMaxTime/2 {
				w.t.Fatalf("autoscale: after %s at up to %d requests/s: %+v, want more than %d replicas, all ready, at most %d%% CPU", since(start), r.rate.Load(), s, from, withinTarget)
			}
		}
		top := w.top()
		w.t.Logf("kubectl top pods at %d requests/s:\n%s", rate, indent(top))
		if cpu := millicores(top); cpu > 0 {
			w.t.Logf("autoscale: %dm of CPU for %d requests/s: %d µs a request", cpu, rate, cpu*1000/rate)
		}
		w.t.Logf("kubectl get hpa:\n%s", indent(w.kubectlRun("get", "horizontalpodautoscaler", "hello")))
		stopRamp()
		rampSent, rampFailures = r.wait()

		stopped := time.Now()
		reapplied = w.reapply(tag)
		w.kubectlRun("patch", "horizontalpodautoscaler", "hello", "--type=merge",
			"-p", fmt.Sprintf(`{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":%d}}}}`, scaleDownWindow))
		w.waitScale("the autoscaler back at 2 pods", autoscaleMaxTime/2, func(s scaleState) bool {
			return s.replicas == 2 && s.pods == 2
		})
		in = time.Since(stopped).Round(time.Second)
	})
	w.t.Logf("the ramp through Traefik: %d requests, %d failed", rampSent, len(rampFailures))
	if len(rampFailures) > 0 {
		w.t.Errorf("the ramp through Traefik: %d of %d requests failed:\n  %s", len(rampFailures), rampSent, strings.Join(rampFailures[:min(len(rampFailures), 20)], "\n  "))
	}
	counts := map[string]*streamResult{}
	for _, r := range results {
		counts[r.via] = r
	}
	traefik, direct := counts["through Traefik"], counts["through the Service's ClusterIP"]
	w.t.Logf("autoscale: %d -> %d pods in %ds at %d req/s; back to 2 in %ds; through Traefik: %d requests, %d failed; through the ClusterIP: %d requests, %d failed",
		from, peak, out/time.Second, rate, in/time.Second, traefik.sent, traefik.failed, direct.sent, direct.failed)
	w.t.Logf("re-apply while scaled out: %d -> %d pods", peak, reapplied)
	if reapplied != peak {
		w.t.Errorf("make kubernetes-apply while the autoscaler ran %d pods took the Deployment to %d: the manifests must leave replicas to the autoscaler", peak, reapplied)
	}
}

// withinTarget is the autoscaler's CPU target in k8s/, 70% of the request,
// with its default tolerance of a tenth: up to there it adds no pod.
const withinTarget = 77

// scaleState is what the autoscaler and the Deployment report.
type scaleState struct {
	replicas, ready int // the Deployment's wanted and ready pods
	pods            int // pods that exist, those that drain included
	utilization     int // the pods' average CPU in percent of the request, -1 when unknown
}

// scale reads the Deployment, the autoscaler and the pods.
func (w *walk) scale() scaleState {
	w.t.Helper()
	var list struct {
		Items []struct {
			Kind string
			Spec struct{ Replicas int }
			// The Deployment's readyReplicas, the autoscaler's currentMetrics.
			Status struct {
				ReadyReplicas  int
				CurrentMetrics []struct {
					Resource struct {
						Current struct{ AverageUtilization *int }
					}
				}
			}
		}
	}
	must(w.t, json.Unmarshal([]byte(w.kubectlRun("get", "deployment/hello", "horizontalpodautoscaler/hello", "-o", "json")), &list))
	s := scaleState{utilization: -1}
	for _, item := range list.Items {
		switch item.Kind {
		case "Deployment":
			s.replicas, s.ready = item.Spec.Replicas, item.Status.ReadyReplicas
		case "HorizontalPodAutoscaler":
			if m := item.Status.CurrentMetrics; len(m) > 0 && m[0].Resource.Current.AverageUtilization != nil {
				s.utilization = *m[0].Resource.Current.AverageUtilization
			}
		}
	}
	s.pods = len(strings.Fields(w.kubectlRun("get", "pods", "-l", "app.kubernetes.io/name=hello", "-o", "name")))
	return s
}

// waitScale polls the scale until done says so, and fails the test after
// timeout.
func (w *walk) waitScale(what string, timeout time.Duration, done func(scaleState) bool) {
	w.t.Helper()
	start := time.Now()
	for {
		s := w.scale()
		if done(s) {
			w.t.Logf("autoscale: %s after %s", what, since(start))
			return
		}
		if time.Since(start) > timeout {
			w.t.Fatalf("autoscale: %s: not after %s: %+v", what, since(start), s)
		}
		time.Sleep(time.Second)
	}
}

// top returns kubectl top pods for the app, or "" while the metrics API has
// no figures for some of them.
func (w *walk) top() string {
	out, err := w.kubectlOut("top", "pods", "-l", "app.kubernetes.io/name=hello")
	if err != nil {
		return ""
	}
	return out
}

// millicores adds up the CPU column of kubectl top pods.
func millicores(top string) int {
	total := 0
	for _, line := range strings.Split(top, "\n")[1:] { // after the header
		if fields := strings.Fields(line); len(fields) > 1 {
			m, _ := strconv.Atoi(strings.TrimSuffix(fields[1], "m")) // 0 for a figure in whole cores: hello never uses one
			total += m
		}
	}
	return total
}

// reapply runs make kubernetes-apply for the running tag and returns the
// fewest replicas the Deployment asked for meanwhile, as a watch on it saw.
func (w *walk) reapply(tag string) int {
	w.t.Helper()
	ctx, cancel := context.WithCancel(w.ctx)
	defer cancel()
	// #nosec G204 -- the suite's kubectl
	watch := exec.CommandContext(ctx, w.kubectl, w.kubectlArgs("get", "deployment", "hello", "--watch", "-o", `jsonpath={.spec.replicas}{"\n"}`)...)
	stdout, err := watch.StdoutPipe()
	must(w.t, err)
	must(w.t, watch.Start())
	fewest := make(chan int)
	go func() {
		low := -1
		for lines := bufio.NewScanner(stdout); lines.Scan(); {
			if n, err := strconv.Atoi(lines.Text()); err == nil && (low < 0 || n < low) {
				low = n
			}
		}
		fewest <- low
	}()
	w.make("kubernetes-apply", "TAG="+tag)
	cancel()
	low := <-fewest
	_ = watch.Wait() // cancel killed it: that kill is the error
	return low
}

// A ramp sends greetings through Traefik over keep-alive connections at a
// rate the walk raises, until its context ends; at most rampMax a second
// for autoscaleMaxTime.
type ramp struct {
	rate   atomic.Int64
	sent   atomic.Int64
	mu     sync.Mutex
	errs   []string
	done   chan struct{}
	client ingressClient
}

func (w *walk) startRamp(ctx context.Context, rate int) *ramp {
	r := &ramp{done: make(chan struct{})}
	r.rate.Store(int64(rate))
	// Connections of its own: the Traefik stream's pool stays as it was.
	r.client = ingressClient{client: &http.Client{Timeout: client.Timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
		url: w.ingress.url, host: w.ingress.host}
	start := time.Now()
	go func() {
		defer close(r.done)
		var requests sync.WaitGroup
		defer requests.Wait()
		// A batch every 10 ms: a ticker at 2,000 a second would drop ticks.
		const every = 10 * time.Millisecond
		tick := time.NewTicker(every)
		defer tick.Stop()
		for range autoscaleMaxTime / every {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for range min(r.rate.Load(), rampMax) * int64(every) / int64(time.Second) {
				requests.Add(1)
				go func() {
					defer requests.Done()
					err := r.client.greet("/TutorialHero")
					r.sent.Add(1)
					if err != nil {
						r.mu.Lock()
						r.errs = append(r.errs, fmt.Sprintf("%s: %v", since(start), err))
						r.mu.Unlock()
					}
				}()
			}
		}
	}()
	return r
}

// wait waits until the ramp's requests are answered and returns how many
// were sent and the failures.
func (r *ramp) wait() (int64, []string) {
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sent.Load(), r.errs
}
