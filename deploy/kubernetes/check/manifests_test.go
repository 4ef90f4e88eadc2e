package check

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// root is deploy/kubernetes, seen from this package.
const root = ".."

// placeholderSecrets stand in for the files example/gen-secrets.sh writes
// (never committed), so the example overlay renders in CI.
var placeholderSecrets = []string{"hs256.secret", "ca.pem", "node-1.pem", "node-1.key", "node-2.pem", "node-2.key",
	"node-3.pem", "node-3.key", "api-100.pem", "api-100.key"}

// objects is one rendering, decoded strictly.
type objects struct {
	services     map[string]*corev1.Service
	statefulSets map[string]*appsv1.StatefulSet
	deployments  map[string]*appsv1.Deployment
	pdbs         map[string]*policyv1.PodDisruptionBudget
	secrets      map[string]*corev1.Secret
}

// render builds the kustomization in dir (relative to root) from an
// in-memory copy of the manifests plus placeholder secret files.
func render(t *testing.T, dir string) objects {
	t.Helper()
	mem := filesys.MakeFsInMemory()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			if rel == "check" || d.Name() == "secrets" {
				return filepath.SkipDir
			}
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return mem.WriteFile(filepath.Join("/k", rel), data)
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range placeholderSecrets {
		if err := mem.WriteFile("/k/example/secrets/"+f, []byte("placeholder "+f)); err != nil {
			t.Fatal(err)
		}
	}
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(mem, "/k/"+dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out := objects{map[string]*corev1.Service{}, map[string]*appsv1.StatefulSet{}, map[string]*appsv1.Deployment{},
		map[string]*policyv1.PodDisruptionBudget{}, map[string]*corev1.Secret{}}
	for _, r := range rm.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		kind, name := r.GetKind(), r.GetName()
		var obj any
		switch kind {
		case "Service":
			o := &corev1.Service{}
			out.services[name], obj = o, o
		case "StatefulSet":
			o := &appsv1.StatefulSet{}
			out.statefulSets[name], obj = o, o
		case "Deployment":
			o := &appsv1.Deployment{}
			out.deployments[name], obj = o, o
		case "PodDisruptionBudget":
			o := &policyv1.PodDisruptionBudget{}
			out.pdbs[name], obj = o, o
		case "Secret":
			o := &corev1.Secret{}
			out.secrets[name], obj = o, o
		default:
			t.Fatalf("%s: %s %s: no decoder for this kind", dir, kind, name)
		}
		// Strict: an unknown or misspelt field, or a duplicate key, fails.
		if err := yaml.UnmarshalStrict(y, obj); err != nil {
			t.Fatalf("%s: %s %s does not decode strictly: %v", dir, kind, name, err)
		}
	}
	return out
}

func TestBase(t *testing.T) {
	o := render(t, "base")
	if len(o.secrets) != 0 {
		t.Errorf("the base must not carry secrets, has %v", keys(o.secrets))
	}
	checkCluster(t, o)
}

// TestExample: the overlay adds the two Secrets (hash-suffixed names) and
// the pods mount them with the files their flags name.
func TestExample(t *testing.T) {
	o := render(t, "example")
	checkCluster(t, o)
	for _, want := range []string{"quorumq-auth", "quorumq-peer-tls"} {
		if secretNamed(o, want) == nil {
			t.Errorf("example: no Secret %s-<hash> (have %v)", want, keys(o.secrets))
		}
	}
	sts := o.statefulSets["quorumq"]
	replicas := int(*sts.Spec.Replicas)
	for i := 1; i <= replicas; i++ {
		checkFiles(t, o, sts.Spec.Template.Spec, map[string]string{"QUORUMQ_NODE_ID": fmt.Sprint(i)})
	}
	checkFiles(t, o, o.deployments["quorumq-api"].Spec.Template.Spec, nil)
}

func checkCluster(t *testing.T, o objects) {
	t.Helper()
	sts := o.statefulSets["quorumq"]
	api := o.deployments["quorumq-api"]
	if sts == nil || api == nil {
		t.Fatalf("want StatefulSet quorumq and Deployment quorumq-api; have %v %v", keys(o.statefulSets), keys(o.deployments))
	}

	// Storage nodes: ids from ordinals starting at 1, started together.
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
		t.Errorf("storage replicas = %v, want 3", sts.Spec.Replicas)
	}
	if sts.Spec.Ordinals == nil || sts.Spec.Ordinals.Start != 1 {
		t.Errorf("storage ordinals must start at 1 (node ids are 1 or more): %+v", sts.Spec.Ordinals)
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("podManagementPolicy = %q, want Parallel (readiness needs a quorum)", sts.Spec.PodManagementPolicy)
	}
	pod := sts.Spec.Template.Spec
	c := container(t, pod)
	args := flags(t, c.Args)
	idEnv := env(c, "QUORUMQ_NODE_ID")
	if idEnv == nil || idEnv.ValueFrom == nil || idEnv.ValueFrom.FieldRef == nil ||
		idEnv.ValueFrom.FieldRef.FieldPath != "metadata.labels['apps.kubernetes.io/pod-index']" {
		t.Errorf("QUORUMQ_NODE_ID must come from the pod-index label: %+v", idEnv)
	}
	if args["node-id"] != "$(QUORUMQ_NODE_ID)" {
		t.Errorf("--node-id = %q, want $(QUORUMQ_NODE_ID)", args["node-id"])
	}

	// Peers: one per ordinal, named through the headless service.
	peerSvc := o.services[sts.Spec.ServiceName]
	if peerSvc == nil || peerSvc.Spec.ClusterIP != corev1.ClusterIPNone || !peerSvc.Spec.PublishNotReadyAddresses {
		t.Fatalf("serviceName %q: want a headless Service publishing not-ready addresses, got %+v", sts.Spec.ServiceName, peerSvc)
	}
	checkSelects(t, peerSvc.Spec.Selector, sts.Spec.Template.Labels, "Service "+peerSvc.Name)
	raftPort := port(t, c, "raft")
	var want []string
	for i := 1; i <= int(*sts.Spec.Replicas); i++ {
		want = append(want, fmt.Sprintf("%d=%s-%d.%s:%d", i, sts.Name, i, peerSvc.Name, raftPort))
	}
	if got := args["peers"]; got != strings.Join(want, ",") {
		t.Errorf("storage --peers = %q, want %q", got, strings.Join(want, ","))
	}
	if got := flags(t, container(t, api.Spec.Template.Spec).Args)["peers"]; got != args["peers"] {
		t.Errorf("API --peers = %q, want the storage nodes' %q", got, args["peers"])
	}
	checkListen(t, c, args, map[string]string{"http-addr": "http", "grpc-addr": "grpc", "raft-addr": "raft", "metrics-addr": "metrics"})

	// Data on a claim at --data-dir.
	if len(sts.Spec.VolumeClaimTemplates) != 1 {
		t.Fatalf("want one volumeClaimTemplate, have %d", len(sts.Spec.VolumeClaimTemplates))
	}
	if m := mount(c, sts.Spec.VolumeClaimTemplates[0].Name); m == nil || m.MountPath != args["data-dir"] {
		t.Errorf("the claim must be mounted at --data-dir %q: %+v", args["data-dir"], m)
	}

	// SIGTERM drains within 30 s (cmd/quorumq/serve.go): the grace period must exceed it.
	if g := pod.TerminationGracePeriodSeconds; g == nil || *g <= 30 {
		t.Errorf("storage terminationGracePeriodSeconds = %v, want more than the 30 s drain", g)
	}
	aa := pod.Affinity
	if aa == nil || aa.PodAntiAffinity == nil || len(aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 1 {
		t.Fatalf("storage pods need a required podAntiAffinity: %+v", aa)
	}
	term := aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[0]
	if term.TopologyKey != "kubernetes.io/hostname" || term.LabelSelector == nil {
		t.Errorf("anti-affinity term %+v: want one storage pod per host", term)
	} else {
		checkSelects(t, term.LabelSelector.MatchLabels, sts.Spec.Template.Labels, "anti-affinity")
	}

	// Both tiers: probes, non-root, read-only root, secrets mounted.
	for name, p := range map[string]corev1.PodSpec{"storage": pod, "api": api.Spec.Template.Spec} {
		c := container(t, p)
		checkProbe(t, name+" readiness", c.ReadinessProbe, "/readyz", c)
		checkProbe(t, name+" liveness", c.LivenessProbe, "/healthz", c)
		sc := p.SecurityContext
		if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
			t.Errorf("%s: pod must run as a non-root user: %+v", name, sc)
		}
		// Secret files not readable by others need the pod's fsGroup
		// (they are group-owned by it) for the non-root user to read them.
		for _, v := range p.Volumes {
			if v.Secret != nil && (v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o004 == 0) &&
				(sc == nil || sc.FSGroup == nil || sc.RunAsGroup == nil || *sc.FSGroup != *sc.RunAsGroup) {
				t.Errorf("%s: secret volume %s is not world-readable: the pod needs fsGroup = runAsGroup", name, v.Name)
			}
		}
		csc := c.SecurityContext
		if csc == nil || csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem ||
			csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation ||
			csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL") {
			t.Errorf("%s: container needs a read-only root, no privilege escalation and no capabilities: %+v", name, csc)
		}
		a := flags(t, c.Args)
		// 0.0.0.0 listeners are refused without authentication, and with
		// it, peer traffic needs mutual TLS.
		for _, f := range []string{"auth-hs256-secret-file", "peer-tls-ca-file", "peer-tls-cert-file", "peer-tls-key-file"} {
			if a[f] == "" {
				t.Errorf("%s: --%s is not set", name, f)
			}
		}
		if _, ok := a["insecure"]; ok {
			t.Errorf("%s: --insecure in a deployment", name)
		}
	}
	apiArgs := flags(t, container(t, api.Spec.Template.Spec).Args)
	if apiArgs["role"] != "api" {
		t.Errorf("API tier --role = %q, want api", apiArgs["role"])
	}
	if strings.Contains(","+args["peers"], ","+apiArgs["node-id"]+"=") {
		t.Errorf("API --node-id %s is a storage node id", apiArgs["node-id"])
	}
	checkListen(t, container(t, api.Spec.Template.Spec), apiArgs, map[string]string{"http-addr": "http", "grpc-addr": "grpc", "metrics-addr": "metrics"})

	// One storage node down at a time.
	pdb := o.pdbs["quorumq-storage"]
	if pdb == nil || pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.Selector == nil {
		t.Fatalf("want PodDisruptionBudget quorumq-storage with maxUnavailable 1: %+v", pdb)
	}
	checkSelects(t, pdb.Spec.Selector.MatchLabels, sts.Spec.Template.Labels, "PDB")

	// Clients reach the API tier.
	svc := o.services["quorumq"]
	if svc == nil || svc.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Fatalf("want ClusterIP Service quorumq: %+v", svc)
	}
	checkSelects(t, svc.Spec.Selector, api.Spec.Template.Labels, "Service quorumq")
	for _, p := range svc.Spec.Ports {
		port(t, container(t, api.Spec.Template.Spec), p.TargetPort.String())
	}
}

// checkFiles: every file a --*-file flag names (with env expanded) is a key
// of the Secret mounted over its directory.
func checkFiles(t *testing.T, o objects, p corev1.PodSpec, env map[string]string) {
	t.Helper()
	c := container(t, p)
	for f, v := range flags(t, c.Args) {
		if !strings.HasSuffix(f, "-file") {
			continue
		}
		for k, e := range env {
			v = strings.ReplaceAll(v, "$("+k+")", e)
		}
		var found bool
		for _, m := range c.VolumeMounts {
			if filepath.Dir(v) != m.MountPath {
				continue
			}
			vol := volume(p, m.Name)
			if vol == nil || vol.Secret == nil {
				t.Fatalf("--%s %s: volume %s is not a Secret", f, v, m.Name)
			}
			s := o.secrets[vol.Secret.SecretName]
			if s == nil {
				t.Fatalf("--%s: Secret %s is not rendered", f, vol.Secret.SecretName)
			}
			key := filepath.Base(v)
			for _, it := range vol.Secret.Items {
				if it.Path == key {
					key = it.Key
				}
			}
			if vol.Secret.Items != nil && !slices.ContainsFunc(vol.Secret.Items, func(it corev1.KeyToPath) bool { return it.Path == filepath.Base(v) }) {
				t.Fatalf("--%s %s: not among the items of volume %s", f, v, m.Name)
			}
			if _, ok := s.Data[key]; !ok {
				t.Fatalf("--%s %s: Secret %s has no key %s", f, v, s.Name, key)
			}
			found = true
		}
		if !found {
			t.Errorf("--%s %s: no volume mounted at %s", f, v, filepath.Dir(v))
		}
	}
}

var serveFlag = regexp.MustCompile(`f\.\w+Var\(&[\w.]+, "([a-z0-9-]+)"`)

// flags parses --name=value arguments and checks every name is a flag of
// `quorumq serve` (cmd/quorumq/serve.go).
func flags(t *testing.T, args []string) map[string]string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(root, "..", "..", "cmd", "quorumq", "serve.go"))
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, m := range serveFlag.FindAllStringSubmatch(string(src), -1) {
		known[m[1]] = true
	}
	if !known["peers"] {
		t.Fatalf("found no flags in serve.go (%d): the pattern is stale", len(known))
	}
	out := map[string]string{}
	for _, a := range args {
		name, v, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !known[name] {
			t.Errorf("argument %q is not a flag of quorumq serve", a)
		}
		out[name] = v
	}
	return out
}

// checkListen: every listener binds all interfaces (pods are reached by IP)
// on the port of the named container port.
func checkListen(t *testing.T, c *corev1.Container, args map[string]string, want map[string]string) {
	t.Helper()
	for f, portName := range want {
		if got, w := args[f], fmt.Sprintf("0.0.0.0:%d", port(t, c, portName)); got != w {
			t.Errorf("--%s = %q, want %q (container port %s)", f, got, w, portName)
		}
	}
}

func checkProbe(t *testing.T, what string, p *corev1.Probe, path string, c *corev1.Container) {
	t.Helper()
	if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path {
		t.Errorf("%s probe: want GET %s, got %+v", what, path, p)
		return
	}
	if p.HTTPGet.Port.String() != "http" {
		t.Errorf("%s probe on port %s, want http (--http-addr serves the probes)", what, p.HTTPGet.Port.String())
	}
	port(t, c, p.HTTPGet.Port.String())
}

func checkSelects(t *testing.T, selector, labels map[string]string, what string) {
	t.Helper()
	if len(selector) == 0 {
		t.Errorf("%s: empty selector", what)
	}
	for k, v := range selector {
		if labels[k] != v {
			t.Errorf("%s: selector %s=%s does not match the pod labels %v", what, k, v, labels)
		}
	}
}

func container(t *testing.T, p corev1.PodSpec) *corev1.Container {
	t.Helper()
	if len(p.Containers) != 1 {
		t.Fatalf("want one container, have %d", len(p.Containers))
	}
	return &p.Containers[0]
}

func port(t *testing.T, c *corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port %q", c.Name, name)
	return 0
}

func env(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func mount(c *corev1.Container, name string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == name {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

func volume(p corev1.PodSpec, name string) *corev1.Volume {
	for i := range p.Volumes {
		if p.Volumes[i].Name == name {
			return &p.Volumes[i]
		}
	}
	return nil
}

func secretNamed(o objects, prefix string) *corev1.Secret {
	for n, s := range o.secrets {
		if strings.HasPrefix(n, prefix+"-") {
			return s
		}
	}
	return nil
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
