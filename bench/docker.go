//go:build linux

package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/nsnet/nsnet/nstest"
	"golang.org/x/sys/unix"
)

// dockerNetwork measures TCP throughput between two containers on a
// Docker network (docker network create; docker run --network, the
// server found by name), with Debian's docker.io run in the private world
// (its state on tmpfs mounts of the bench's own mount namespace) and an
// image of iperf3 and its libraries: the counterpart of the nsnet
// network's member-to-member figure. It returns Gbit/s, or an error
// saying why Docker could not run here.
func dockerNetwork(w *nstest.World) (float64, error) {
	for _, c := range []string{"dockerd", "docker", "iperf3", "ldd"} {
		if _, err := exec.LookPath(c); err != nil {
			return 0, fmt.Errorf("no %s", c)
		}
	}
	for _, dir := range []string{"/var/lib/docker", "/run/docker", "/etc/docker", "/var/lib/containerd", "/run/containerd"} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return 0, err
		}
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, ""); err != nil {
			return 0, fmt.Errorf("tmpfs on %s: %w", dir, err)
		}
		defer unix.Unmount(dir, unix.MNT_DETACH)
	}
	args := []string{"dockerd", "--storage-driver", "vfs", "-H", "unix:///run/docker/docker.sock", "--pidfile", "/run/docker/docker.pid", "--group", "root"}
	if w.HostName != "" { // (Isolate's world: the host is this namespace)
		args = append([]string{"nsenter", "--net=/run/netns/" + w.HostName, "--"}, args...)
	}
	dockerd := exec.Command(args[0], args[1:]...)
	var log bytes.Buffer
	dockerd.Stdout, dockerd.Stderr = &log, &log
	dockerd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started, done := make(chan error, 1), make(chan struct{})
	go func() {
		runtime.LockOSThread() // (Pdeathsig follows the thread that started it)
		err := dockerd.Start()
		started <- err
		if err == nil {
			dockerd.Wait()
		}
		close(done)
	}()
	if err := <-started; err != nil {
		return 0, err
	}
	defer func() {
		dockerd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			dockerd.Process.Kill()
			<-done
		}
	}()
	docker := func(args ...string) (string, error) {
		out, err := exec.Command("docker", append([]string{"-H", "unix:///run/docker/docker.sock"}, args...)...).CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	for i := 0; ; i++ {
		if _, err := docker("info"); err == nil {
			break
		}
		if i == 150 {
			return 0, fmt.Errorf("dockerd did not start: %s", log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	img, err := iperfImage()
	if err != nil {
		return 0, err
	}
	if _, err := docker("import", "--change", `ENTRYPOINT ["/usr/bin/iperf3"]`, img, "nsnet-iperf:1"); err != nil {
		return 0, err
	}
	if _, err := docker("network", "create", "--subnet", "10.94.0.0/24", "benchnet"); err != nil {
		return 0, err
	}
	if _, err := docker("run", "-d", "--network", "benchnet", "--name", "srv", "nsnet-iperf:1", "-s"); err != nil {
		return 0, err
	}
	defer docker("rm", "-f", "srv")
	var runs []float64
	for range 3 {
		g, err := dockerIperf(docker)
		if err != nil {
			return 0, err
		}
		runs = append(runs, g)
	}
	return median(runs), nil
}

// dockerIperf runs the iperf3 client in a container of its own against
// the server container, by name, and returns Gbit/s received.
func dockerIperf(docker func(...string) (string, error)) (float64, error) {
	var out string
	var err error
	for try := 0; try < 20; try++ {
		if out, err = docker("run", "--rm", "--network", "benchnet", "nsnet-iperf:1", "-c", "srv", "-t", "3", "-J"); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		return 0, err
	}
	g, _, err := tcpReceived([]byte(out[strings.Index(out, "{"):]))
	if err != nil {
		return 0, err
	}
	if g == 0 {
		return 0, fmt.Errorf("iperf3 in Docker: %s", out)
	}
	return g, nil
}

// iperfImage writes a tar of a root file system holding iperf3 and the
// libraries ldd names, for docker import.
func iperfImage() (string, error) {
	bin, _ := exec.LookPath("iperf3")
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return "", err
	}
	files := append([]string{bin}, regexp.MustCompile(`(/\S+)`).FindAllString(string(out), -1)...)
	path := filepath.Join(os.TempDir(), "nsnet-iperf.tar")
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	tw.WriteHeader(&tar.Header{Name: "tmp/", Mode: 0o1777, Typeflag: tar.TypeDir}) // (iperf3's streams are files there)
	seen := map[string]bool{}
	for _, name := range files {
		real, err := filepath.EvalSymlinks(name)
		if err != nil || seen[name] {
			continue
		}
		seen[name] = true
		b, err := os.ReadFile(real)
		if err != nil {
			return "", err
		}
		// Under its own name, and the dirs before it.
		dir := ""
		for _, part := range strings.Split(strings.TrimPrefix(filepath.Dir(name), "/"), "/") {
			dir += part + "/"
			if !seen[dir] {
				seen[dir] = true
				tw.WriteHeader(&tar.Header{Name: dir, Mode: 0o755, Typeflag: tar.TypeDir})
			}
		}
		if err := tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(name, "/"), Mode: 0o755, Size: int64(len(b))}); err != nil {
			return "", err
		}
		tw.Write(b)
	}
	return path, tw.Close()
}
