// Package runner runs an app and its sidecar as one unit (`weft run`): the
// sidecar starts first and owns the listeners, the app is its child with the
// mesh's addresses in its environment, and they stop together — on a signal
// the instance is deregistered and drained before the app is asked to stop;
// when the app exits on its own, the instance is deregistered and the unit
// exits with the app's code.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/weftmesh/weft/sidecar"
)

// Config configures a unit.
type Config struct {
	Sidecar sidecar.Config
	Command []string
	// StopTimeout is how long the app has to exit after SIGTERM before it
	// is killed.
	StopTimeout time.Duration
	Stdout      io.Writer
	Stderr      io.Writer
	Logger      *slog.Logger
	// AppWait is how long the app may take to open its port before the unit
	// warns (and keeps waiting); default DefaultAppWait.
	AppWait time.Duration
}

// DefaultAppWait: an app that has not opened its port after this long is
// probably listening elsewhere (it ignored PORT), which is worth saying.
const DefaultAppWait = 3 * time.Second

// ExitError carries the app's exit code out of Run.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return "app exited with code " + strconv.Itoa(e.Code) }

// Run starts the sidecar and the app and returns when both have stopped.
// A nil error means the unit was stopped by ctx and the app exited cleanly;
// an *ExitError carries a non-zero app exit code.
func Run(ctx context.Context, cfg Config) error {
	if len(cfg.Command) == 0 {
		return errors.New("no app command: weft run [flags] -- CMD ARGS...")
	}
	path, err := exec.LookPath(cfg.Command[0])
	if err != nil {
		return fmt.Errorf("app command %q: not found or not executable", cfg.Command[0])
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	log := cfg.Logger
	chosen := cfg.Sidecar.AppPort == 0
	if chosen {
		if cfg.Sidecar.AppPort, err = freePort(); err != nil {
			return fmt.Errorf("choosing an app port: %w", err)
		}
	}
	sc, err := sidecar.New(cfg.Sidecar)
	if err != nil {
		return err
	}

	app := exec.Command(path, cfg.Command[1:]...)
	app.Stdin = os.Stdin
	app.Stdout, app.Stderr = cfg.Stdout, cfg.Stderr
	app.Env = appEnv(os.Environ(), cfg.Sidecar, sc)
	// Own process group: a terminal's Ctrl-C reaches the unit, which drains
	// before stopping the app. Pdeathsig: if the sidecar dies (kill -9), the
	// app dies with it, as the two are one instance.
	app.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	scCtx, stopSidecar := context.WithCancel(context.Background())
	defer stopSidecar()
	scDone := make(chan error, 1)
	go func() { scDone <- sc.Run(scCtx) }()

	if err := app.Start(); err != nil {
		stopSidecar()
		<-scDone
		return fmt.Errorf("starting app %q: %w", cfg.Command[0], err)
	}
	sc.SetAppPID(app.Process.Pid) // its process tree's CPU use is the load it reports
	log.Info("app started", "pid", app.Process.Pid, "cmd", cfg.Command[0], "port", cfg.Sidecar.AppPort)
	appDone := make(chan error, 1)
	go func() { appDone <- app.Wait() }()
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go warnUntilListening(watchCtx, sc.AppReady(), cfg.Sidecar.AppPort, chosen, cfg.AppWait, log)

	var appErr error
	stoppedByUs := false
	select {
	case appErr = <-appDone:
		if code := exitCode(appErr); code != 0 {
			log.Warn("app exited with code "+strconv.Itoa(code)+"; deregistering", "code", code, "err", appErr)
		} else {
			log.Info("app exited on its own (code 0); deregistering")
		}
	case err := <-scDone:
		// The sidecar failed: the unit cannot serve. Stop the app.
		log.Error("sidecar failed; stopping the app", "err", err)
		stopApp(app, appDone, cfg.StopTimeout, log)
		return err
	case <-ctx.Done():
		log.Info("stopping: deregister, drain, then stop the app")
		dctx, cancel := context.WithTimeout(context.Background(), cfg.Sidecar.Drain+cfg.Sidecar.Propagation+2*time.Second)
		if err := sc.Drain(dctx); err != nil {
			log.Warn("drain", "err", err)
		}
		cancel()
		stoppedByUs = true
		appErr = stopApp(app, appDone, cfg.StopTimeout, log)
	}
	stopSidecar()
	if err := <-scDone; err != nil {
		log.Warn("sidecar", "err", err)
	}
	code := exitCode(appErr)
	if stoppedByUs && (code == 0 || code == 128+int(syscall.SIGTERM)) {
		return nil
	}
	if code != 0 {
		return &ExitError{Code: code}
	}
	return nil
}

// warnUntilListening warns after wait, and then every 4 × wait, until the
// app accepts connections on port: the instance is not registered until
// then, and the usual cause (an app that ignores PORT) is silent otherwise.
func warnUntilListening(ctx context.Context, ready <-chan struct{}, port int, chosen bool, wait time.Duration, log *slog.Logger) {
	if wait <= 0 {
		wait = DefaultAppWait
	}
	start := time.Now()
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ready:
			return
		case <-t.C:
		}
		hint := "is the app listening on --app-port " + strconv.Itoa(port) + "?"
		if chosen {
			hint = "the app must listen on the port in its PORT environment variable (PORT=" + strconv.Itoa(port) + "), or pass --app-port N with the port it listens on"
		}
		log.Warn("app not accepting connections on 127.0.0.1:"+strconv.Itoa(port)+" yet; the instance registers once it does, still waiting: "+hint,
			"port", port, "waited", time.Since(start).Round(time.Second))
		t.Reset(4 * wait)
	}
}

func stopApp(app *exec.Cmd, done <-chan error, timeout time.Duration, log *slog.Logger) error {
	_ = syscall.Kill(-app.Process.Pid, syscall.SIGTERM)
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		log.Warn("app did not exit after SIGTERM; killing it", "timeout", timeout)
		_ = syscall.Kill(-app.Process.Pid, syscall.SIGKILL)
		return <-done
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return 1
}

func appEnv(base []string, cfg sidecar.Config, sc *sidecar.Sidecar) []string {
	env := append([]string(nil), base...)
	env = append(env,
		"PORT="+strconv.Itoa(cfg.AppPort),
		"WEFT_SERVICE="+cfg.Service,
		"WEFT_INSTANCE_ID="+sc.ID(),
	)
	if out := sc.OutboundAddr(); out != "" {
		env = append(env, "HTTP_PROXY=http://"+out, "http_proxy=http://"+out, "WEFT_OUTBOUND="+out)
		// Messaging: POST $WEFT_PUBLISH_URL/<topic> to publish.
		env = append(env, "WEFT_PUBLISH_URL=http://"+out+"/v1/publish")
		if os.Getenv("NO_PROXY") == "" && os.Getenv("no_proxy") == "" {
			// Calls to the app's own loopback must not loop through the mesh.
			env = append(env, "NO_PROXY=localhost,127.0.0.1,::1", "no_proxy=localhost,127.0.0.1,::1")
		}
	}
	if a := sc.AdminAddr(); a != "" {
		env = append(env, "WEFT_ADMIN="+a)
	}
	return env
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
