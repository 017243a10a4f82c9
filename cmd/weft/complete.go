package main

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/apiclient"
	"github.com/weftmesh/weft/messaging/admin"
	"github.com/weftmesh/weft/telemetry/tracestore"
)

// Dynamic shell completion (`weft completion bash|zsh|fish`): service,
// instance, topic and trace ids come from the control plane named by the
// command's --server (or WEFT_SERVER). A control plane that does not answer
// within a second completes nothing.

const completionTimeout = time.Second

func completionServer(cmd *cobra.Command) string {
	if f := cmd.Flag("server"); f != nil && f.Value.String() != "" {
		return f.Value.String()
	}
	return apiclient.DefaultServer
}

func completionServices(cmd *cobra.Command) (services, instances []string) {
	c, err := apiclient.New(completionServer(cmd))
	if err != nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	defer cancel()
	res, err := c.Services(ctx)
	if err != nil {
		return nil, nil
	}
	for _, s := range res.Services {
		services = append(services, s.Name)
		for _, in := range s.Instances {
			instances = append(instances, in.ID+"\t"+s.Name)
		}
	}
	return services, instances
}

func completeServices(cmd *cobra.Command) ([]cobra.Completion, cobra.ShellCompDirective) {
	s, _ := completionServices(cmd)
	return s, cobra.ShellCompDirectiveNoFileComp
}

func completeInstances(cmd *cobra.Command) ([]cobra.Completion, cobra.ShellCompDirective) {
	_, in := completionServices(cmd)
	return in, cobra.ShellCompDirectiveNoFileComp
}

func completeTopics(cmd *cobra.Command) ([]cobra.Completion, cobra.ShellCompDirective) {
	api, err := newMsgAPI(completionServer(cmd))
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	defer cancel()
	var res admin.TopicsJSON
	if api.do(ctx, http.MethodGet, "/api/v1/topics", nil, nil, &res) != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, t := range res.Topics {
		out = append(out, t.Name)
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

func completeTraces(cmd *cobra.Command) ([]cobra.Completion, cobra.ShellCompDirective) {
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	defer cancel()
	var list tracestore.TraceList
	if getJSON(ctx, completionServer(cmd), "/api/v1/traces?limit=50", &list) != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, t := range list.Traces {
		out = append(out, t.TraceID+"\t"+t.RootService+": "+t.RootName)
	}
	return out, cobra.ShellCompDirectiveKeepOrder | cobra.ShellCompDirectiveNoFileComp
}

// registerCompletions attaches the completions to the commands that take
// those ids, found by path so each command's own file stays as it is.
func registerCompletions(root *cobra.Command) {
	positional := func(path string, n int, f func(*cobra.Command) ([]cobra.Completion, cobra.ShellCompDirective)) {
		cmd, _, err := root.Find(strings.Fields(path))
		if err != nil || cmd == root || cmd.ValidArgsFunction != nil {
			return
		}
		cmd.ValidArgsFunction = func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) != n {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return f(cmd)
		}
	}
	positional("stat", 0, completeServices)
	positional("trace", 0, completeTraces)
	positional("publish", 0, completeTopics)
	positional("dlq list", 0, completeTopics)
	positional("dlq replay", 0, completeTopics)
	flag := func(path, name string, f func(*cobra.Command) ([]cobra.Completion, cobra.ShellCompDirective)) {
		cmd, _, err := root.Find(strings.Fields(path))
		if err != nil || cmd == root || cmd.Flags().Lookup(name) == nil {
			return
		}
		_ = cmd.RegisterFlagCompletionFunc(name, func(cmd *cobra.Command, _ []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			return f(cmd)
		})
	}
	flag("traces", "service", completeServices)
	flag("run", "service", completeServices)
	flag("sidecar", "service", completeServices)
}
